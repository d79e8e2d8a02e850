#include "ReferenceSmoothFlowKernels.h"
#include "SmoothFlowCoreError.h"
#include "SmoothFlowHostData.h"

using namespace SmoothFlowPlugin;
using namespace OpenMM;
using namespace std;

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
    ReferencePlatform::PlatformData& data = hostData(context);
    double box[9];  // box vectors a, b, c as rows
    gatherPositions(data, particles, usePeriodic, positions, box);
    sf_eval_info info{};
    sf_error error{};
    sf_status status = sf_evaluate(model.get(), workspace, numMolecules, positions.data(), usePeriodic ? box : nullptr,
                                   energies.data(), includeForces ? forces.data() : nullptr, &info, &error);
    if (status != SF_OK)
        throwEvaluationError(status, error, particles, sf_model_num_atoms(model.get()));
    wallCount += info.wall_dims;
    if (includeForces)
        scatterForces(data, particles, forces);
    return sumEnergies(energies);
}

long long ReferenceCalcSmoothFlowForceKernel::getWallCount() const {
    return wallCount;
}
