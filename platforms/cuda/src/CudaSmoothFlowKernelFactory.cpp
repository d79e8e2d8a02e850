#include "CudaSmoothFlowKernelFactory.h"
#include "CommonSmoothFlowKernels.h"
#include "CublasMatrixProducts.h"
#include "openmm/OpenMMException.h"
#include "openmm/cuda/CudaContext.h"
#include "openmm/cuda/CudaPlatform.h"
#include "openmm/internal/ContextImpl.h"

using namespace SmoothFlowPlugin;
using namespace OpenMM;
using namespace std;

extern "C" OPENMM_EXPORT_SMOOTHFLOW void registerPlatforms() {
}

// Called by both entry points below.  Not through registerKernelFactories():
// every plugin library exports a function of that name, and a program that
// links two of them gets one of the two for both.
static void registerOnCUDA() {
    try {
        Platform& platform = Platform::getPlatformByName("CUDA");
        platform.registerKernelFactory(CalcSmoothFlowForceKernel::Name(), new CudaSmoothFlowKernelFactory());
    } catch (const exception&) {
        // OpenMM has no CUDA platform here (its plugin did not load, as
        // without a driver): nothing to register.
    }
}

extern "C" OPENMM_EXPORT_SMOOTHFLOW void registerKernelFactories() {
    registerOnCUDA();
}

extern "C" OPENMM_EXPORT_SMOOTHFLOW void registerSmoothFlowCUDAKernelFactories() {
    registerOnCUDA();
}

KernelImpl* CudaSmoothFlowKernelFactory::createKernelImpl(string name, const Platform& platform, ContextImpl& context) const {
    CudaPlatform::PlatformData& data = *static_cast<CudaPlatform::PlatformData*>(context.getPlatformData());
    // With several devices the force runs on the first; OpenMM sums every
    // context's forces and energy.
    CudaContext& cu = *data.contexts[0];
    if (name == CalcSmoothFlowForceKernel::Name())
        return new CommonCalcSmoothFlowForceKernel(name, platform, cu, make_unique<CublasMatrixProducts>(cu));
    throw OpenMMException("CudaSmoothFlowKernelFactory: tried to create kernel with illegal kernel name '" + name + "'");
}
