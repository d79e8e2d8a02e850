#include "SmoothFlowForceProxy.h"
#include "Base64.h"
#include "Sha256.h"
#include "SmoothFlowForce.h"
#include "openmm/OpenMMException.h"
#include "openmm/serialization/SerializationNode.h"
#include <memory>

using namespace SmoothFlowPlugin;
using namespace OpenMM;
using namespace std;

// Bump when the XML layout changes; deserialize keeps reading older versions.
//   1: the model (base64), molecules, force group, name, periodic flag.
//   2: and modelSha256, the SHA-256 of the model's bytes (64 lowercase hex digits), required
//      and verified: a model altered inside the XML is an error, never a different potential.
//   3: and weightPrecision (0 = float64, 1 = float32); absent before, meaning float64.
static const int CURRENT_VERSION = 3;

SmoothFlowForceProxy::SmoothFlowForceProxy() : SerializationProxy("SmoothFlowForce") {
}

void SmoothFlowForceProxy::serialize(const void* object, SerializationNode& node) const {
    const SmoothFlowForce& force = *reinterpret_cast<const SmoothFlowForce*>(object);
    node.setIntProperty("version", CURRENT_VERSION);
    node.setStringProperty("name", force.getName());
    node.setIntProperty("forceGroup", force.getForceGroup());
    node.setBoolProperty("usesPeriodic", force.usesPeriodicBoundaryConditions());
    node.setIntProperty("weightPrecision", (int) force.getWeightPrecision());
    node.setStringProperty("model", base64Encode(force.getModelBytes()));
    node.setStringProperty("modelSha256", sha256Hex(force.getModelBytes()));
    SerializationNode& molecules = node.createChildNode("Molecules");
    for (int m = 0; m < force.getNumMolecules(); m++) {
        SerializationNode& molecule = molecules.createChildNode("Molecule");
        for (int p : force.getMoleculeParticles(m))
            molecule.createChildNode("Particle").setIntProperty("index", p);
    }
}

void* SmoothFlowForceProxy::deserialize(const SerializationNode& node) const {
    int version = node.getIntProperty("version");
    if (version < 1 || version > CURRENT_VERSION)
        throw OpenMMException("SmoothFlowForceProxy: unsupported version " + to_string(version) +
                              " (this build reads versions 1 to " + to_string(CURRENT_VERSION) + ")");
    string name = node.hasProperty("name") ? node.getStringProperty("name") : string("SmoothFlowForce");
    string which = name == "SmoothFlowForce" ? name : "SmoothFlowForce '" + name + "'";
    vector<char> model = base64Decode(node.getStringProperty("model"));
    if (version >= 2) {
        if (!node.hasProperty("modelSha256"))
            throw OpenMMException(which + ": the serialized force (version " + to_string(version) +
                                  ") lacks modelSha256, the SHA-256 of its embedded model");
        string recorded = node.getStringProperty("modelSha256");
        string computed = sha256Hex(model);
        if (recorded != computed)
            throw OpenMMException(which + ": the embedded model's SHA-256 " + computed + " does not match the " +
                                  "modelSha256 recorded with it (" + recorded.substr(0, 64) +
                                  "): the model was altered or corrupted");
    }
    unique_ptr<SmoothFlowForce> force(SmoothFlowForce::createFromBytes(model));
    if (node.hasProperty("name"))
        force->setName(name);
    force->setForceGroup(node.getIntProperty("forceGroup", 0));
    force->setUsesPeriodicBoundaryConditions(node.getBoolProperty("usesPeriodic", false));
    if (version >= 3) {
        int precision = node.getIntProperty("weightPrecision", 0);
        if (precision != SmoothFlowForce::WeightsFloat64 && precision != SmoothFlowForce::WeightsFloat32)
            throw OpenMMException(which + ": weightPrecision " + to_string(precision) +
                                  " is neither 0 (float64) nor 1 (float32)");
        force->setWeightPrecision((SmoothFlowForce::WeightPrecision) precision);
    }
    for (const SerializationNode& child : node.getChildren())
        if (child.getName() == "Molecules")
            for (const SerializationNode& molecule : child.getChildren()) {
                vector<int> particles;
                for (const SerializationNode& particle : molecule.getChildren())
                    particles.push_back(particle.getIntProperty("index"));
                force->addMolecule(particles);
            }
    return force.release();
}
