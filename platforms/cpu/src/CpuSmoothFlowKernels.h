#ifndef CPU_SMOOTHFLOW_KERNELS_H_
#define CPU_SMOOTHFLOW_KERNELS_H_

#include "SmoothFlowKernels.h"
#include "openmm/internal/ThreadPool.h"
#include "smoothflow.h"
#include <memory>
#include <vector>

namespace SmoothFlowPlugin {

/**
 * The CPU platform's SmoothFlow kernel: the force's molecules are split into
 * one contiguous chunk per thread of the platform's pool (the Threads property
 * or OPENMM_CPU_THREADS), each evaluated by the C core in blocks of at most 64
 * molecules in a workspace of its own.
 * Everything is allocated in initialize(); a step allocates nothing and
 * creates no thread.  The blocks are fixed by the thread count, so the results
 * depend only on it, never on scheduling.  One molecule is not
 * split across threads: see docs/design.md, "The CPU platform".
 */
class CpuCalcSmoothFlowForceKernel : public CalcSmoothFlowForceKernel {
public:
    CpuCalcSmoothFlowForceKernel(const std::string& name, const OpenMM::Platform& platform, OpenMM::ThreadPool& threads);
    ~CpuCalcSmoothFlowForceKernel();
    void initialize(const OpenMM::System& system, const SmoothFlowForce& force, const std::vector<int>& particles) override;
    double execute(OpenMM::ContextImpl& context, bool includeForces, bool includeEnergy) override;
    long long getWallCount() const override;
private:
    struct Chunk {
        int first = 0, count = 0;           // molecules [first, first + count)
        sf_workspace* workspace = nullptr;  // for one block (see kBlock)
        int errorFirst = 0;                 // first molecule of the block that failed
        sf_status status = SF_OK;
        sf_error error{};
        sf_eval_info info{};
    };
    void evaluateChunk(Chunk& chunk);
    OpenMM::ThreadPool& threads;
    std::shared_ptr<const sf_model> model;
    std::vector<Chunk> chunks;
    std::vector<int> particles;             // molecules x N, model atom order
    std::vector<double> positions, forces;  // molecules x N x 3
    std::vector<double> energies;           // molecules
    int numAtoms, numMolecules;
    bool usePeriodic, withForces;
    double box[9];                          // box vectors a, b, c as rows
    long long wallCount;
};

} // namespace SmoothFlowPlugin

#endif /*CPU_SMOOTHFLOW_KERNELS_H_*/
