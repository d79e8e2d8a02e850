#ifndef COMMON_SMOOTHFLOW_KERNELS_H_
#define COMMON_SMOOTHFLOW_KERNELS_H_

#include "SmoothFlowKernels.h"
#include "openmm/common/ComputeArray.h"
#include "openmm/common/ComputeContext.h"
#include "openmm/common/ComputeKernel.h"
#include "smoothflow.h"
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace SmoothFlowPlugin {

/**
 * The program CommonCalcSmoothFlowForceKernel hands to the platform's
 * compileProgram(): the source that follows OpenMM's prelude (the shared
 * mathematics, then kernels/smoothflow.cc) and its compile-time constants for
 * a model, a periodicity and a work-group size.  The prelude, which the
 * platform adds, carries the precision.  Public so that a test can compile
 * exactly this program without a device (platforms/cuda/tests).
 */
std::string commonSmoothFlowProgramSource();
std::map<std::string, std::string> commonSmoothFlowProgramDefines(const sf_model* model, bool periodic, int workGroupSize);
/** The threads of the work-group that evaluates one molecule on a device. */
int commonSmoothFlowWorkGroupSize(bool isCPU, int maxThreadBlockSize);

/**
 * The SmoothFlow kernel of the GPU platforms, written once against OpenMM's
 * ComputeContext (the OpenCL and CUDA platforms create this same class).
 * The model's weights, the molecules' intermediate values, their energies
 * and the wall counts live on the device; a step uploads nothing but kernel
 * arguments and, when the energy is requested, reads back one error flag.
 * One work-group evaluates one molecule (kernels/smoothflow.cc,
 * docs/gpu-platforms.md).
 */
class CommonCalcSmoothFlowForceKernel : public CalcSmoothFlowForceKernel {
public:
    CommonCalcSmoothFlowForceKernel(const std::string& name, const OpenMM::Platform& platform, OpenMM::ComputeContext& cc);
    void initialize(const OpenMM::System& system, const SmoothFlowForce& force, const std::vector<int>& particles) override;
    double execute(OpenMM::ContextImpl& context, bool includeForces, bool includeEnergy) override;
    long long getWallCount() const override;
    /** Recompute where each model atom sits in OpenMM's reordered arrays (called on every reordering). @private */
    void updateParticleIndex();
private:
    void checkErrors();
    [[noreturn]] void reportError(int molecule, int code);
    OpenMM::ComputeContext& cc;
    std::shared_ptr<const sf_model> model;
    std::vector<int> particles;          // molecules x N System particles, model atom order
    std::vector<int> hostParticleIndex;  // the same, as indices into OpenMM's current atom order
    int numAtoms = 0, numMolecules = 0, workGroupSize = 0;
    bool usePeriodic = false;
    double kT = 0, energyConstant = 0;  // kJ/mol: kT sum log scale + U0 + kT (prior normalization)
    OpenMM::ComputeArray particleIndex, modelInt, modelReal, weights, scratch, moleculeEnergy, status, errorFlag,
        wallCounts;
    OpenMM::ComputeKernel computeKernel, sumKernel;
};

} // namespace SmoothFlowPlugin

#endif /*COMMON_SMOOTHFLOW_KERNELS_H_*/
