#ifndef COMMON_SMOOTHFLOW_KERNELS_H_
#define COMMON_SMOOTHFLOW_KERNELS_H_

#include "CommonFreeFormKernel.h"
#include "SmoothFlowKernels.h"
#include "SmoothFlowMatrixProducts.h"
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
 * a model, a periodicity and a work-group size; batchedStages gives the
 * batched path's program instead of the fused one.  The prelude, which the
 * platform adds, carries the precision.  Public so that a test can compile
 * exactly this program without a device (platforms/cuda/tests).
 */
std::string commonSmoothFlowProgramSource();
std::map<std::string, std::string> commonSmoothFlowProgramDefines(const sf_model* model, bool periodic, int workGroupSize,
                                                                   bool batchedStages = false);
/** The threads of the work-group that evaluates one molecule on a device. */
int commonSmoothFlowWorkGroupSize(bool isCPU, int maxThreadBlockSize);

/**
 * How the device evaluates the flow (docs/gpu-platforms.md): the fused path
 * runs every stage of a molecule in one launch, with the conditioners'
 * products as plain loops; the batched path launches each stage for all
 * molecules and does the products with the platform's BLAS, one matrix
 * product per linear map over all molecules.  The environment variable
 * SMOOTHFLOW_DEVICE_PATH (read when a Context is created) chooses: `auto`
 * (the default: fused below kMinBatchedMolecules molecules or without a
 * BLAS, otherwise whichever is faster in a timed trial at the first force
 * evaluation), `fused` or `batched`.
 */
enum class SmoothFlowDevicePath { Auto, Fused, Batched };
SmoothFlowDevicePath smoothFlowDevicePathFromEnvironment();
/** Below this many molecules `auto` takes the fused path without a trial. */
const int kMinBatchedMolecules = 16;

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
    /**
     * products: the platform's BLAS for the batched path, or null, with
     * `noProducts` saying why (e.g. the library was built without CLBlast).
     */
    CommonCalcSmoothFlowForceKernel(const std::string& name, const OpenMM::Platform& platform, OpenMM::ComputeContext& cc,
                                    std::unique_ptr<SmoothFlowMatrixProducts> products = nullptr,
                                    const std::string& noProducts = "this platform has no BLAS interface");
    void initialize(const OpenMM::System& system, const SmoothFlowForce& force, const std::vector<int>& particles) override;
    double execute(OpenMM::ContextImpl& context, bool includeForces, bool includeEnergy) override;
    long long getWallCount() const override;
    /** Recompute where each model atom sits in OpenMM's reordered arrays (called on every reordering). @private */
    void updateParticleIndex();
private:
    void setStepArguments(OpenMM::ComputeKernel& kernel, int first, bool includeForces, bool commit);
    void runFused(bool includeForces, bool commit);
    void runBatched(bool includeForces, bool commit);
    void chooseByTrial();
    void checkErrors();
    [[noreturn]] void reportError(int molecule, int code);
    OpenMM::ComputeContext& cc;
    std::unique_ptr<CommonFreeFormKernel> freeForm;  // a free-form model's kernel (then nothing below is used)
    std::shared_ptr<const sf_model> model;
    std::vector<int> particles;          // molecules x N System particles, model atom order
    std::vector<int> hostParticleIndex;  // the same, as indices into OpenMM's current atom order
    int numAtoms = 0, numMolecules = 0, workGroupSize = 0;
    bool usePeriodic = false;
    double kT = 0, energyConstant = 0;  // kJ/mol: kT sum log scale + U0 + kT (prior normalization)
    OpenMM::ComputeArray particleIndex, modelInt, modelReal, weights, scratch, moleculeEnergy, status, errorFlag,
        wallCounts, energyPartial, wallPartial;
    OpenMM::ComputeKernel computeKernel, stageKernel, sumKernel;
    // The batched path: the BLAS, the chosen path, and each linear map's
    // product as offsets into weights and scratch (in reals).
    std::unique_ptr<SmoothFlowMatrixProducts> products;
    std::string noProducts;
    SmoothFlowDevicePath path = SmoothFlowDevicePath::Fused;
    struct LinearMap {
        int nIn, nOut;
        size_t weight;            // W (nOut x nIn, row major) in weights
        int input, output;        // forward: input and pre-activation output in a molecule's slice
        int gradIn, gradOut;      // reverse: the gradient it reads (nOut) and writes (nIn)
    };
    std::vector<std::vector<LinearMap>> linearMaps;  // per layer
    int stride = 0;
};

} // namespace SmoothFlowPlugin

#endif /*COMMON_SMOOTHFLOW_KERNELS_H_*/
