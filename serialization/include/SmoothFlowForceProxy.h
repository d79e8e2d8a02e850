#ifndef OPENMM_SMOOTHFLOW_FORCE_PROXY_H_
#define OPENMM_SMOOTHFLOW_FORCE_PROXY_H_

#include "internal/windowsExportSmoothFlow.h"
#include "openmm/serialization/SerializationProxy.h"

namespace SmoothFlowPlugin {

/**
 * Serializes a SmoothFlowForce to XML and back.  The model file is embedded as
 * base64, so a serialized System needs no other file.  Version 1 stores the
 * model, the molecules, the force group, the name and the periodic flag;
 * version 2 (written now) adds modelSha256, the SHA-256 of the model's bytes,
 * which deserialization requires and verifies (a mismatch is an error naming
 * the force).  Version 1 XML, without a checksum, still loads.
 */
class OPENMM_EXPORT_SMOOTHFLOW SmoothFlowForceProxy : public OpenMM::SerializationProxy {
public:
    SmoothFlowForceProxy();
    void serialize(const void* object, OpenMM::SerializationNode& node) const override;
    void* deserialize(const OpenMM::SerializationNode& node) const override;
};

} // namespace SmoothFlowPlugin

#endif /*OPENMM_SMOOTHFLOW_FORCE_PROXY_H_*/
