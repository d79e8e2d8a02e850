#include "ReferenceSmoothFlowKernelFactory.h"
#include "ReferenceSmoothFlowKernels.h"
#include "openmm/OpenMMException.h"
#include "openmm/reference/ReferencePlatform.h"

using namespace SmoothFlowPlugin;
using namespace OpenMM;
using namespace std;

extern "C" OPENMM_EXPORT_SMOOTHFLOW void registerPlatforms() {
}

extern "C" OPENMM_EXPORT_SMOOTHFLOW void registerKernelFactories() {
    // The CPU platform derives from ReferencePlatform and keeps positions and
    // forces in the same PlatformData, so one kernel serves both.  Platforms
    // that are not loaded are simply absent from the list.
    for (int i = 0; i < Platform::getNumPlatforms(); i++) {
        Platform& platform = Platform::getPlatform(i);
        if (dynamic_cast<ReferencePlatform*>(&platform) != nullptr)
            platform.registerKernelFactory(CalcSmoothFlowForceKernel::Name(), new ReferenceSmoothFlowKernelFactory());
    }
}

extern "C" OPENMM_EXPORT_SMOOTHFLOW void registerSmoothFlowReferenceKernelFactories() {
    registerKernelFactories();
}

KernelImpl* ReferenceSmoothFlowKernelFactory::createKernelImpl(string name, const Platform& platform, ContextImpl& /*context*/) const {
    if (name == CalcSmoothFlowForceKernel::Name())
        return new ReferenceCalcSmoothFlowForceKernel(name, platform);
    throw OpenMMException("ReferenceSmoothFlowKernelFactory: tried to create kernel with illegal kernel name '" + name + "'");
}
