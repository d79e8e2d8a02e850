#include "ReferenceSmoothFlowKernels.h"
#include "SmoothFlowCoreError.h"
#include "openmm/internal/ContextImpl.h"
#include "openmm/reference/ReferencePlatform.h"

using namespace SmoothFlowPlugin;
using namespace OpenMM;
using namespace std;

static ReferencePlatform::PlatformData& getData(ContextImpl& context) {
    return *reinterpret_cast<ReferencePlatform::PlatformData*>(context.getPlatformData());
}

ReferenceCalcSmoothFlowForceKernel::ReferenceCalcSmoothFlowForceKernel(const string& name, const Platform& platform) :
        CalcSmoothFlowForceKernel(name, platform), workspace(nullptr), numMolecules(0), usePeriodic(false), wallCount(0) {
}

ReferenceCalcSmoothFlowForceKernel::~ReferenceCalcSmoothFlowForceKernel() {
    if (workspace != nullptr)
        sf_workspace_free(workspace);
}

void ReferenceCalcSmoothFlowForceKernel::initialize(const System& /*system*/, const SmoothFlowForce& force, const vector<int>& particles) {
    model = force.getModel();
    this->particles = particles;
    numMolecules = particles.size() / sf_model_num_atoms(model.get());
    usePeriodic = force.usesPeriodicBoundaryConditions();
    // Everything an evaluation needs is allocated here, once: sf_evaluate
    // itself never allocates.
    sf_error error{};
    sf_status status = sf_workspace_new(model.get(), numMolecules, &workspace, &error);
    if (status != SF_OK)
        throwCoreError("cannot allocate the workspace for " + to_string(numMolecules) + " molecules", status, error);
    positions.resize(3 * particles.size());
    forces.resize(3 * particles.size());
    energies.resize(numMolecules);
}

double ReferenceCalcSmoothFlowForceKernel::execute(ContextImpl& context, bool includeForces, bool /*includeEnergy: the core always computes it*/) {
    ReferencePlatform::PlatformData& data = getData(context);
    const vector<Vec3>& pos = *data.positions;
    for (size_t i = 0; i < particles.size(); i++)
        for (int k = 0; k < 3; k++)
            positions[3 * i + k] = pos[particles[i]][k];
    double box[9];  // box vectors a, b, c as rows
    if (usePeriodic)
        for (int v = 0; v < 3; v++)
            for (int k = 0; k < 3; k++)
                box[3 * v + k] = data.periodicBoxVectors[v][k];
    sf_eval_info info{};
    sf_error error{};
    sf_status status = sf_evaluate(model.get(), workspace, numMolecules, positions.data(), usePeriodic ? box : nullptr,
                                   energies.data(), includeForces ? forces.data() : nullptr, &info, &error);
    if (status != SF_OK)
        throwEvaluationError(status, error, particles, sf_model_num_atoms(model.get()));
    wallCount += info.wall_dims;
    if (includeForces) {
        vector<Vec3>& force = *data.forces;
        for (size_t i = 0; i < particles.size(); i++)
            force[particles[i]] += Vec3(forces[3 * i], forces[3 * i + 1], forces[3 * i + 2]);
    }
    double energy = 0.0;
    for (double e : energies)
        energy += e;
    return energy;
}

long long ReferenceCalcSmoothFlowForceKernel::getWallCount() const {
    return wallCount;
}
