#ifndef CUDA_SMOOTHFLOW_KERNEL_FACTORY_H_
#define CUDA_SMOOTHFLOW_KERNEL_FACTORY_H_

#include "internal/windowsExportSmoothFlow.h"
#include "openmm/KernelFactory.h"

namespace SmoothFlowPlugin {

/**
 * Creates the SmoothFlow kernels of the CUDA platform: the common kernels
 * (platforms/common) on the platform's first CUDA context.
 */
class CudaSmoothFlowKernelFactory : public OpenMM::KernelFactory {
public:
    OpenMM::KernelImpl* createKernelImpl(std::string name, const OpenMM::Platform& platform, OpenMM::ContextImpl& context) const override;
};

} // namespace SmoothFlowPlugin

/**
 * Register the factory with the CUDA platform.  OpenMM calls
 * registerKernelFactories() when it loads the library as a plugin; programs
 * that link the library directly call this instead.  Without a CUDA platform
 * (no driver, so OpenMM's CUDA plugin did not load) it registers nothing.
 */
extern "C" OPENMM_EXPORT_SMOOTHFLOW void registerSmoothFlowCUDAKernelFactories();

#endif /*CUDA_SMOOTHFLOW_KERNEL_FACTORY_H_*/
