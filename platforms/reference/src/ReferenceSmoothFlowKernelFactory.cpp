#include "ReferenceSmoothFlowKernelFactory.h"
#include "ReferenceSmoothFlowKernels.h"
#include "openmm/OpenMMException.h"
#include "openmm/reference/ReferencePlatform.h"

using namespace SmoothFlowPlugin;
using namespace OpenMM;
using namespace std;

extern "C" OPENMM_EXPORT_SMOOTHFLOW void registerPlatforms() {
}

// Called by both entry points below.  Not through registerKernelFactories():
// every plugin library exports a function of that name, and a program that
// links two of them gets one of the two for both.
static void registerOnReference() {
    // The Reference platform, and any platform derived from it (they keep
    // positions and forces in the same PlatformData) that has no SmoothFlow
    // kernel of its own yet: the CPU platform gets its threaded kernel from
    // libSmoothFlowPluginCPU, which replaces this one whichever loads first.
    for (int i = 0; i < Platform::getNumPlatforms(); i++) {
        Platform& platform = Platform::getPlatform(i);
        if (dynamic_cast<ReferencePlatform*>(&platform) == nullptr)
            continue;
        if (platform.getName() == "Reference" || !platform.supportsKernels({CalcSmoothFlowForceKernel::Name()}))
            platform.registerKernelFactory(CalcSmoothFlowForceKernel::Name(), new ReferenceSmoothFlowKernelFactory());
    }
}

extern "C" OPENMM_EXPORT_SMOOTHFLOW void registerKernelFactories() {
    registerOnReference();
}

extern "C" OPENMM_EXPORT_SMOOTHFLOW void registerSmoothFlowReferenceKernelFactories() {
    registerOnReference();
}

KernelImpl* ReferenceSmoothFlowKernelFactory::createKernelImpl(string name, const Platform& platform, ContextImpl& /*context*/) const {
    if (name == CalcSmoothFlowForceKernel::Name())
        return new ReferenceCalcSmoothFlowForceKernel(name, platform);
    throw OpenMMException("ReferenceSmoothFlowKernelFactory: tried to create kernel with illegal kernel name '" + name + "'");
}
