#ifndef OPENMM_SMOOTHFLOW_CORE_ERROR_H_
#define OPENMM_SMOOTHFLOW_CORE_ERROR_H_

// Private to the plugin's own libraries (not installed): it includes the
// core's smoothflow.h, which the public headers do not need.

#include "openmm/OpenMMException.h"
#include "smoothflow.h"
#include <cstdio>
#include <string>
#include <vector>

namespace SmoothFlowPlugin {

/**
 * Turn a failed core call into an OpenMMException carrying the core's message,
 * prefixed by what the plugin was doing.  The core's status string stands in
 * when a call left no message.
 * @private
 */
[[noreturn]] inline void throwCoreError(const std::string& what, sf_status status, const sf_error& error) {
    std::string message = error.message[0] != '\0' ? std::string(error.message)
                                                   : std::string(sf_status_string(status));
    throw OpenMM::OpenMMException("SmoothFlowForce: " + what + ": " + message);
}

/**
 * The same for an evaluation error, naming the System particles behind the
 * model atoms the core reports (particles holds numAtoms entries per molecule).
 * @private
 */
[[noreturn]] inline void throwEvaluationError(sf_status status, const sf_error& error,
                                              const std::vector<int>& particles, int numAtoms) {
    std::vector<int> involved;
    if (error.molecule >= 0)
        for (int a : error.atoms) {
            size_t index = (size_t) error.molecule * numAtoms + a;
            if (a >= 0 && index < particles.size())
                involved.push_back(particles[index]);
        }
    std::string where;
    for (size_t i = 0; i < involved.size(); i++)
        where += (i == 0 ? "" : ", ") + std::to_string(involved[i]);
    if (!involved.empty())
        where = std::string(involved.size() == 1 ? " [System particle " : " [System particles ") + where + "]";
    std::string message = error.message[0] != '\0' ? std::string(error.message)
                                                   : std::string(sf_status_string(status));
    throw OpenMM::OpenMMException("SmoothFlowForce: evaluation failed: " + message + where);
}

/**
 * An evaluation error of a batch that starts at molecule `first` of the force
 * (a CPU thread's chunk): make its molecule index, in the field and in the
 * message's leading "molecule <n>:", the force's own.
 * @private
 */
inline void offsetErrorMolecule(sf_error& error, int first) {
    if (error.molecule < 0 || first == 0)
        return;
    std::string message(error.message), prefix = "molecule " + std::to_string(error.molecule) + ":";
    error.molecule += first;
    if (message.compare(0, prefix.size(), prefix) == 0)
        message = "molecule " + std::to_string(error.molecule) + ":" + message.substr(prefix.size());
    std::snprintf(error.message, sizeof(error.message), "%s", message.c_str());
}

} // namespace SmoothFlowPlugin

#endif /*OPENMM_SMOOTHFLOW_CORE_ERROR_H_*/
