#ifndef OPENMM_SMOOTHFLOW_HOST_DATA_H_
#define OPENMM_SMOOTHFLOW_HOST_DATA_H_

// Private to the plugin's host-side kernels (Reference and CPU platforms, which
// share the Reference platform's position and force arrays): moving data
// between those arrays and the C core's batch layout.

#include "openmm/Vec3.h"
#include "openmm/internal/ContextImpl.h"
#include "openmm/reference/ReferencePlatform.h"
#include <vector>

namespace SmoothFlowPlugin {

/** @private */
inline OpenMM::ReferencePlatform::PlatformData& hostData(OpenMM::ContextImpl& context) {
    return *reinterpret_cast<OpenMM::ReferencePlatform::PlatformData*>(context.getPlatformData());
}

/**
 * Gather the molecules' positions (particles in model atom order, molecule after
 * molecule) into `positions` (x, y, z per atom) and, when periodic, the box
 * vectors a, b, c as the rows of `box`.
 * @private
 */
inline void gatherPositions(const OpenMM::ReferencePlatform::PlatformData& data, const std::vector<int>& particles,
                            bool periodic, std::vector<double>& positions, double box[9]) {
    const std::vector<OpenMM::Vec3>& pos = *data.positions;
    for (size_t i = 0; i < particles.size(); i++)
        for (int k = 0; k < 3; k++)
            positions[3 * i + k] = pos[particles[i]][k];
    if (periodic)
        for (int v = 0; v < 3; v++)
            for (int k = 0; k < 3; k++)
                box[3 * v + k] = data.periodicBoxVectors[v][k];
}

/** Add the core's forces onto the System's particles. @private */
inline void scatterForces(OpenMM::ReferencePlatform::PlatformData& data, const std::vector<int>& particles,
                          const std::vector<double>& forces) {
    std::vector<OpenMM::Vec3>& force = *data.forces;
    for (size_t i = 0; i < particles.size(); i++)
        force[particles[i]] += OpenMM::Vec3(forces[3 * i], forces[3 * i + 1], forces[3 * i + 2]);
}

/** The molecules' energies summed in molecule order. @private */
inline double sumEnergies(const std::vector<double>& energies) {
    double energy = 0.0;
    for (double e : energies)
        energy += e;
    return energy;
}

} // namespace SmoothFlowPlugin

#endif /*OPENMM_SMOOTHFLOW_HOST_DATA_H_*/
