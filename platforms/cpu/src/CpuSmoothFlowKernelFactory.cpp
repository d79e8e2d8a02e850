#include "CpuSmoothFlowKernelFactory.h"
#include "CpuSmoothFlowKernels.h"
#include "openmm/OpenMMException.h"
#include "openmm/cpu/CpuPlatform.h"

using namespace SmoothFlowPlugin;
using namespace OpenMM;
using namespace std;

extern "C" OPENMM_EXPORT_SMOOTHFLOW void registerPlatforms() {
}

// Called by both entry points below (see ReferenceSmoothFlowKernelFactory.cpp).
static void registerOnCpu() {
    // Only the CPU platform: the Reference platform keeps the plain kernel.
    for (int i = 0; i < Platform::getNumPlatforms(); i++) {
        Platform& platform = Platform::getPlatform(i);
        if (dynamic_cast<CpuPlatform*>(&platform) != nullptr)
            platform.registerKernelFactory(CalcSmoothFlowForceKernel::Name(), new CpuSmoothFlowKernelFactory());
    }
}

extern "C" OPENMM_EXPORT_SMOOTHFLOW void registerKernelFactories() {
    registerOnCpu();
}

extern "C" OPENMM_EXPORT_SMOOTHFLOW void registerSmoothFlowCpuKernelFactories() {
    registerOnCpu();
}

KernelImpl* CpuSmoothFlowKernelFactory::createKernelImpl(string name, const Platform& platform, ContextImpl& context) const {
    if (name == CalcSmoothFlowForceKernel::Name())
        return new CpuCalcSmoothFlowForceKernel(name, platform, CpuPlatform::getPlatformData(context).threads);
    throw OpenMMException("CpuSmoothFlowKernelFactory: tried to create kernel with illegal kernel name '" + name + "'");
}
