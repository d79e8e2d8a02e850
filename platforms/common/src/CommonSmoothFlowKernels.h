#ifndef COMMON_SMOOTHFLOW_KERNELS_H_
#define COMMON_SMOOTHFLOW_KERNELS_H_

#include "SmoothFlowKernels.h"
#include "openmm/common/ComputeArray.h"
#include "openmm/common/ComputeContext.h"
#include "openmm/common/ComputeKernel.h"
#include "smoothflow.h"
#include <memory>
#include <string>
#include <vector>

namespace SmoothFlowPlugin {

/**
 * The SmoothFlow kernel of the GPU platforms, written once against OpenMM's
 * ComputeContext (OpenCL here; CUDA takes the same class).  The model's
 * weights, the molecules' intermediate values, their energies and the wall
 * counts live on the device; a step uploads nothing but kernel arguments
 * and, when the energy is requested, reads back one error flag.  One
 * work-group evaluates one molecule (kernels/smoothflow.cc,
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
