#ifndef COMMON_SMOOTHFLOW_KERNEL_SOURCES_H_
#define COMMON_SMOOTHFLOW_KERNEL_SOURCES_H_

#include <string>

namespace SmoothFlowPlugin {

/**
 * The kernels of platforms/common/src/kernels, one string per file, made by
 * the build (platforms/common/EncodeCommonKernels.cmake), as OpenMM encodes
 * its own.  They follow OpenMM's prelude and sf_math_kernel_source.
 */
class CommonSmoothFlowKernelSources {
public:
    static const std::string smoothflow;
    static const std::string free_form;
};

} // namespace SmoothFlowPlugin

#endif /*COMMON_SMOOTHFLOW_KERNEL_SOURCES_H_*/
