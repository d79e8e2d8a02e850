#ifndef COMMON_DEVICE_MOLECULES_H_
#define COMMON_DEVICE_MOLECULES_H_

#include "openmm/common/ComputeArray.h"
#include "openmm/common/ComputeContext.h"
#include "smoothflow.h"
#include <functional>
#include <string>
#include <vector>

namespace SmoothFlowPlugin {

/**
 * The molecules (copies of the model) of a SmoothFlowForce on a device, shared by the kernel of
 * the flows over internal coordinates and the free-form one: where their particles sit in
 * OpenMM's reordered arrays, and how a failure of one reaches the user.
 *
 * deviceParticleSlots: for each of `particles` (the copies' System particles, in model order),
 * its slot in OpenMM's current atom order (OpenMM moves whole molecules between slots).
 */
std::vector<int> deviceParticleSlots(OpenMM::ComputeContext& cc, const std::vector<int>& particles);

/**
 * Each molecule has an error code in `status`, and one flag says whether any is set.
 *
 * checkDeviceErrors downloads the flag; if it is set, it clears the flag and the codes (so the
 * Context can go on once the positions are fixed) and calls report(molecule, code) for each
 * failed molecule in order (report throws).
 */
void checkDeviceErrors(OpenMM::ComputeArray& errorFlag, OpenMM::ComputeArray& status, int numMolecules,
                       const std::function<void(int molecule, int code)>& report);

/**
 * The C core evaluates a failed molecule again, from the device's positions (box: the
 * periodic box vectors, or nullptr), and its error is thrown with the same message as on the
 * Reference platform; if the core in double finds nothing wrong, the device failed in its own
 * precision (or in a forces-only evaluation since the last check), and the message names the
 * kernel, the precision, what it found and the System particles.
 */
[[noreturn]] void reportDeviceError(OpenMM::ComputeContext& cc, const sf_model* model,
                                    const std::vector<int>& hostParticleIndex, const std::vector<int>& particles,
                                    int numAtoms, int molecule, const double* box, const std::string& kernel,
                                    const char* found);

} // namespace SmoothFlowPlugin

#endif /*COMMON_DEVICE_MOLECULES_H_*/
