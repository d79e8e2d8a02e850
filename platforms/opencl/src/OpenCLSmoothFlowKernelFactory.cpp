#include "OpenCLSmoothFlowKernelFactory.h"
#include "CommonSmoothFlowKernels.h"
#ifdef SMOOTHFLOW_HAVE_CLBLAST
#include "CLBlastMatrixProducts.h"
#endif
#include "openmm/OpenMMException.h"
#include "openmm/internal/ContextImpl.h"
#include "openmm/opencl/OpenCLContext.h"
#include "openmm/opencl/OpenCLPlatform.h"

using namespace SmoothFlowPlugin;
using namespace OpenMM;
using namespace std;

extern "C" OPENMM_EXPORT_SMOOTHFLOW void registerPlatforms() {
}

// Called by both entry points below.  Not through registerKernelFactories():
// every plugin library exports a function of that name, and a program that
// links two of them gets one of the two for both.
static void registerOnOpenCL() {
    try {
        Platform& platform = Platform::getPlatformByName("OpenCL");
        platform.registerKernelFactory(CalcSmoothFlowForceKernel::Name(), new OpenCLSmoothFlowKernelFactory());
    } catch (const exception&) {
        // OpenMM has no OpenCL platform here (its plugin did not load): nothing to register.
    }
}

extern "C" OPENMM_EXPORT_SMOOTHFLOW void registerKernelFactories() {
    registerOnOpenCL();
}

extern "C" OPENMM_EXPORT_SMOOTHFLOW void registerSmoothFlowOpenCLKernelFactories() {
    registerOnOpenCL();
}

KernelImpl* OpenCLSmoothFlowKernelFactory::createKernelImpl(string name, const Platform& platform, ContextImpl& context) const {
    OpenCLPlatform::PlatformData& data = *static_cast<OpenCLPlatform::PlatformData*>(context.getPlatformData());
    // With several devices the force runs on the first; OpenMM sums every
    // context's forces and energy.
    OpenCLContext& cl = *data.contexts[0];
    if (name == CalcSmoothFlowForceKernel::Name()) {
#ifdef SMOOTHFLOW_HAVE_CLBLAST
        return new CommonCalcSmoothFlowForceKernel(name, platform, cl, make_unique<CLBlastMatrixProducts>(cl));
#else
        return new CommonCalcSmoothFlowForceKernel(name, platform, cl, nullptr,
                                                   "libSmoothFlowPluginOpenCL was built without CLBlast");
#endif
    }
    throw OpenMMException("OpenCLSmoothFlowKernelFactory: tried to create kernel with illegal kernel name '" + name + "'");
}
