#ifndef COMMON_FREE_FORM_KERNEL_H_
#define COMMON_FREE_FORM_KERNEL_H_

#include "SmoothFlowForce.h"
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
 * The program a free-form model's device kernel compiles (the shared mathematics, then
 * kernels/free_form.cc) and its compile-time constants for a model (its shape) and a
 * work-group size.  Public so that a test can compile exactly this program without a device
 * (platforms/cuda/tests).  The defines throw an OpenMMException for a model that is not of
 * the free-form kind.
 */
std::string commonFreeFormProgramSource();
std::map<std::string, std::string> commonFreeFormProgramDefines(const sf_model* model, int workGroupSize);
/** The same from the shape alone: N particles in `dim` dimensions, hidden width, layers. */
std::map<std::string, std::string> commonFreeFormProgramDefines(int numParticles, int dim, int hidden, int layers,
                                                                int workGroupSize);
/** The threads of the work-group that evaluates one copy of a free-form model. */
int commonFreeFormWorkGroupSize(bool isCPU, int maxThreadBlockSize);
/** Reals of device workspace one work-group needs for a free-form model (its copy's slot
 *  tangents, edge blocks and LU: core/src/sf_egnn.c's workspace), from its description
 *  (smoothflow.h, sf_model_describe_free_form). */
size_t commonFreeFormWorkspaceReals(const sf_model* model);
/** The most device workspace one work-group may take (bytes); a model beyond it is refused
 *  when the Context is created, with both numbers.  (The C core's own limit on its workspace,
 *  SF_MAX_FREE_FORM_WORKSPACE, is 512 MiB: a model the core accepts may still be too large
 *  here.) */
const size_t kMaxFreeFormWorkspaceBytes = size_t(1) << 28;
/** The device workspace of all work-groups together is kept within this (bytes), by running
 *  fewer work-groups at once. */
const size_t kFreeFormWorkspaceBudgetBytes = size_t(1) << 30;

/**
 * A free-form model's SmoothFlowForce on a GPU platform (OpenCL, CUDA), written once against
 * OpenMM's ComputeContext; CommonCalcSmoothFlowForceKernel hands a free-form model to it
 * (docs/free-form-kernels.md).  One work-group evaluates one copy at a time, in its own slice
 * of a device workspace; there are as many slices as work-groups run at once (at most one per
 * copy), so the memory does not grow with the number of copies beyond that.  The weights are
 * uploaded once; a step uploads nothing but kernel arguments and, when the energy is
 * requested, reads back one error flag.
 */
class CommonFreeFormKernel {
public:
    CommonFreeFormKernel(OpenMM::ComputeContext& cc, const std::string& platformName);
    /** particles: the copies' System particles, N per copy in model order. */
    void initialize(const SmoothFlowForce& force, const std::vector<int>& particles);
    /** Energy into OpenMM's energy buffer, forces into its force buffer. */
    void execute(bool includeForces, bool includeEnergy);
    /** Recompute where each particle sits in OpenMM's reordered arrays. @private */
    void updateParticleIndex();
private:
    void checkErrors();
    [[noreturn]] void reportError(int molecule, int code);
    OpenMM::ComputeContext& cc;
    std::string platformName;
    std::shared_ptr<const sf_model> model;
    std::vector<int> particles, hostParticleIndex;
    int numParticles = 0, numMolecules = 0, numGroups = 0, workGroupSize = 0;
    OpenMM::ComputeArray particleIndex, weights, scratch, moleculeEnergy, status, errorFlag;
    OpenMM::ComputeKernel computeKernel, sumKernel;
};

} // namespace SmoothFlowPlugin

#endif /*COMMON_FREE_FORM_KERNEL_H_*/
