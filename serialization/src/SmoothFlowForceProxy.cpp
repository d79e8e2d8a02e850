#include "SmoothFlowForceProxy.h"
#include "Base64.h"
#include "SmoothFlowForce.h"
#include "openmm/OpenMMException.h"
#include "openmm/serialization/SerializationNode.h"
#include <memory>

using namespace SmoothFlowPlugin;
using namespace OpenMM;
using namespace std;

// Bump when the XML layout changes; deserialize keeps reading older versions.
static const int CURRENT_VERSION = 1;

SmoothFlowForceProxy::SmoothFlowForceProxy() : SerializationProxy("SmoothFlowForce") {
}

void SmoothFlowForceProxy::serialize(const void* object, SerializationNode& node) const {
    const SmoothFlowForce& force = *reinterpret_cast<const SmoothFlowForce*>(object);
    node.setIntProperty("version", CURRENT_VERSION);
    node.setStringProperty("name", force.getName());
    node.setIntProperty("forceGroup", force.getForceGroup());
    node.setBoolProperty("usesPeriodic", force.usesPeriodicBoundaryConditions());
    node.setStringProperty("model", base64Encode(force.getModelBytes()));
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
    unique_ptr<SmoothFlowForce> force(SmoothFlowForce::createFromBytes(base64Decode(node.getStringProperty("model"))));
    if (node.hasProperty("name"))
        force->setName(node.getStringProperty("name"));
    force->setForceGroup(node.getIntProperty("forceGroup", 0));
    force->setUsesPeriodicBoundaryConditions(node.getBoolProperty("usesPeriodic", false));
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
