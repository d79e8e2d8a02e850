#include "CpuSmoothFlowKernels.h"
#include "SmoothFlowCoreError.h"
#include "SmoothFlowHostData.h"

using namespace SmoothFlowPlugin;
using namespace OpenMM;
using namespace std;

// A thread evaluates its chunk in blocks of at most this many molecules: the
// workspace stays a few MB however many molecules there are, and beyond about
// 32 molecules a larger batch is no faster per molecule (benchmarks/results/cpu.md).
static const int kBlock = 64;

CpuCalcSmoothFlowForceKernel::CpuCalcSmoothFlowForceKernel(const string& name, const Platform& platform, ThreadPool& threads) :
        CalcSmoothFlowForceKernel(name, platform), threads(threads), numAtoms(0), numMolecules(0), usePeriodic(false),
        withForces(true), box{}, wallCount(0) {
}

CpuCalcSmoothFlowForceKernel::~CpuCalcSmoothFlowForceKernel() {
    for (Chunk& chunk : chunks)
        sf_workspace_free(chunk.workspace);
}

void CpuCalcSmoothFlowForceKernel::initialize(const System& /*system*/, const SmoothFlowForce& force, const vector<int>& particles) {
    model = force.getModel();
    this->particles = particles;
    numAtoms = sf_model_num_atoms(model.get());
    numMolecules = particles.size() / numAtoms;
    usePeriodic = force.usesPeriodicBoundaryConditions();
    // One contiguous chunk per thread, sizes differing by at most one; fewer
    // chunks than threads when there are fewer molecules.
    int numChunks = min(threads.getNumThreads(), numMolecules);
    chunks.resize(numChunks);
    for (int c = 0, first = 0; c < numChunks; c++) {
        Chunk& chunk = chunks[c];
        chunk.first = first;
        chunk.count = numMolecules / numChunks + (c < numMolecules % numChunks ? 1 : 0);
        first += chunk.count;
        sf_error error{};
        const int size = min(chunk.count, kBlock);
        sf_status status = sf_workspace_new(model.get(), size, &chunk.workspace, &error);
        if (status != SF_OK)
            throwCoreError("cannot allocate the workspace for " + to_string(size) + " molecules", status, error);
    }
    positions.resize(3 * particles.size());
    forces.resize(3 * particles.size());
    energies.resize(numMolecules);
}

void CpuCalcSmoothFlowForceKernel::evaluateChunk(Chunk& chunk) {
    chunk.info = sf_eval_info{};
    chunk.status = SF_OK;
    for (int first = chunk.first; first < chunk.first + chunk.count; first += kBlock) {
        const int count = min(kBlock, chunk.first + chunk.count - first);
        const size_t offset = (size_t) first * numAtoms * 3;
        sf_eval_info info{};
        chunk.status = sf_evaluate(model.get(), chunk.workspace, count, positions.data() + offset,
                                   usePeriodic ? box : nullptr, energies.data() + first,
                                   withForces ? forces.data() + offset : nullptr, &info, &chunk.error);
        if (chunk.status != SF_OK) {
            chunk.errorFirst = first;  // the block's molecule 0
            return;
        }
        chunk.info.wall_dims += info.wall_dims;
        chunk.info.max_newton_iters = max(chunk.info.max_newton_iters, info.max_newton_iters);
    }
}

double CpuCalcSmoothFlowForceKernel::execute(ContextImpl& context, bool includeForces, bool /*includeEnergy: the core always computes it*/) {
    // The CPU platform keeps positions and forces in the Reference platform's data.
    ReferencePlatform::PlatformData& data = hostData(context);
    gatherPositions(data, particles, usePeriodic, positions, box);
    withForces = includeForces;
    if (chunks.size() == 1)
        evaluateChunk(chunks[0]);  // no hand-off to the pool for one chunk
    else {
        threads.execute([this] (ThreadPool&, int thread) {
            if (thread < (int) chunks.size())
                evaluateChunk(chunks[thread]);
        });
        threads.waitForThreads();
    }
    // The first failing chunk in molecule order reports, its molecule index
    // made global so the message names the right System particles.
    for (Chunk& chunk : chunks) {
        if (chunk.status != SF_OK) {
            offsetErrorMolecule(chunk.error, chunk.errorFirst);
            throwEvaluationError(chunk.status, chunk.error, particles, numAtoms);
        }
        wallCount += chunk.info.wall_dims;
    }
    if (includeForces)
        scatterForces(data, particles, forces);
    return sumEnergies(energies);
}

long long CpuCalcSmoothFlowForceKernel::getWallCount() const {
    return wallCount;
}
