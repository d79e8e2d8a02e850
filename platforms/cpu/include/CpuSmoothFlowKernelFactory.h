#ifndef CPU_SMOOTHFLOW_KERNEL_FACTORY_H_
#define CPU_SMOOTHFLOW_KERNEL_FACTORY_H_

#include "internal/windowsExportSmoothFlow.h"
#include "openmm/KernelFactory.h"

namespace SmoothFlowPlugin {

/**
 * Creates the SmoothFlow kernels of the CPU platform: the molecules of a force
 * are evaluated in parallel on the platform's own thread pool.
 */
class CpuSmoothFlowKernelFactory : public OpenMM::KernelFactory {
public:
    OpenMM::KernelImpl* createKernelImpl(std::string name, const OpenMM::Platform& platform, OpenMM::ContextImpl& context) const override;
};

} // namespace SmoothFlowPlugin

/**
 * Register the factory with the CPU platform.  OpenMM calls
 * registerKernelFactories() when it loads the library as a plugin; programs
 * that link the library directly call this instead.
 */
extern "C" OPENMM_EXPORT_SMOOTHFLOW void registerSmoothFlowCpuKernelFactories();

#endif /*CPU_SMOOTHFLOW_KERNEL_FACTORY_H_*/
