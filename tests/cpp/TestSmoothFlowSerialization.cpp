/*
 * XML round trip of SmoothFlowForce: every getter agrees and a Context built
 * from the copy gives identical energies and forces.  The base64 codec that
 * embeds the model in the XML, on the RFC 4648 test vectors.
 */

#include "Base64.h"
#include "ReferenceSmoothFlowKernelFactory.h"
#include "SmoothFlowForce.h"
#include "SmoothFlowTestUtilities.h"
#include "openmm/Context.h"
#include "openmm/Platform.h"
#include "openmm/State.h"
#include "openmm/System.h"
#include "openmm/VerletIntegrator.h"
#include "openmm/serialization/XmlSerializer.h"
#include <iostream>
#include <memory>
#include <sstream>

using namespace SmoothFlowPlugin;
using namespace SmoothFlowTest;
using namespace OpenMM;
using namespace std;

static void assertSameForce(const SmoothFlowForce& a, const SmoothFlowForce& b) {
    ASSERT(a.getModelBytes() == b.getModelBytes());
    ASSERT_EQUAL(a.getName(), b.getName());
    ASSERT_EQUAL(a.getForceGroup(), b.getForceGroup());
    ASSERT_EQUAL(a.usesPeriodicBoundaryConditions(), b.usesPeriodicBoundaryConditions());
    ASSERT_EQUAL(a.getNumModelAtoms(), b.getNumModelAtoms());
    ASSERT_EQUAL(a.getTemperature(), b.getTemperature());
    ASSERT_EQUAL(a.getKT(), b.getKT());
    ASSERT_EQUAL(a.getSupportPolicy(), b.getSupportPolicy());
    ASSERT_EQUAL(a.hasModelAtomInfo(), b.hasModelAtomInfo());
    ASSERT_EQUAL(a.getModelConfig(), b.getModelConfig());
    for (int i = 0; i < a.getNumModelAtoms(); i++) {
        ASSERT_EQUAL(a.getModelAtomName(i), b.getModelAtomName(i));
        ASSERT_EQUAL(a.getModelAtomResidueName(i), b.getModelAtomResidueName(i));
        ASSERT_EQUAL(a.getModelAtomResidueIndex(i), b.getModelAtomResidueIndex(i));
    }
    ASSERT_EQUAL(a.getNumMolecules(), b.getNumMolecules());
    for (int m = 0; m < a.getNumMolecules(); m++)
        ASSERT_EQUAL_CONTAINERS(a.getMoleculeParticles(m), b.getMoleculeParticles(m));
}

static void testRoundTrip(const string& model, bool periodic) {
    vector<Configuration> reference = readReference(dataFile(model + ".reference.txt"));
    SmoothFlowForce* force = new SmoothFlowForce(dataFile(model + ".safetensors"));
    int numAtoms = force->getNumModelAtoms();
    // Two copies, the second at reversed particles, plus one unused particle.
    vector<int> first, second;
    for (int a = 0; a < numAtoms; a++) {
        first.push_back(a);
        second.push_back(2 * numAtoms - a);
    }
    force->addMolecule(first);
    force->addMolecule(second);
    force->setForceGroup(5);
    force->setName("flow potential");
    force->setUsesPeriodicBoundaryConditions(periodic);

    System system;
    for (int i = 0; i < 2 * numAtoms + 1; i++)
        system.addParticle(1.0);
    system.setDefaultPeriodicBoxVectors(Vec3(4, 0, 0), Vec3(0, 4, 0), Vec3(0, 0, 4));
    system.addForce(force);

    stringstream buffer;
    XmlSerializer::serialize<SmoothFlowForce>(force, "Force", buffer);
    unique_ptr<SmoothFlowForce> copy(XmlSerializer::deserialize<SmoothFlowForce>(buffer));
    assertSameForce(*force, *copy);

    // The whole System too, and both give the same energies.
    stringstream systemBuffer;
    XmlSerializer::serialize<System>(&system, "System", systemBuffer);
    unique_ptr<System> systemCopy(XmlSerializer::deserialize<System>(systemBuffer));
    assertSameForce(*force, dynamic_cast<const SmoothFlowForce&>(systemCopy->getForce(0)));

    vector<Vec3> positions(2 * numAtoms + 1, Vec3(1, 1, 1));
    for (int a = 0; a < numAtoms; a++) {
        positions[first[a]] = reference[0].positions[a];
        positions[second[a]] = reference[1].positions[a] + Vec3(0.5, 0.5, 0.5);
    }
    VerletIntegrator i1(0.001), i2(0.001);
    Context c1(system, i1, Platform::getPlatformByName("Reference"));
    Context c2(*systemCopy, i2, Platform::getPlatformByName("Reference"));
    c1.setPositions(positions);
    c2.setPositions(positions);
    State s1 = c1.getState(State::Energy | State::Forces);
    State s2 = c2.getState(State::Energy | State::Forces);
    ASSERT_EQUAL(s1.getPotentialEnergy(), s2.getPotentialEnergy());
    ASSERT_EQUAL_TOL(reference[0].energy + reference[1].energy, s1.getPotentialEnergy(), 1e-10);
    for (size_t i = 0; i < positions.size(); i++)
        ASSERT_EQUAL_VEC(s1.getForces()[i], s2.getForces()[i], 0.0);
}

static void testDefaultMolecules() {
    // A force with no molecules stays without them (the default mapping).
    SmoothFlowForce force(dataFile("tiny.safetensors"));
    stringstream buffer;
    XmlSerializer::serialize<SmoothFlowForce>(&force, "Force", buffer);
    unique_ptr<SmoothFlowForce> copy(XmlSerializer::deserialize<SmoothFlowForce>(buffer));
    assertSameForce(force, *copy);
}

static void testNewerVersionRejected() {
    SmoothFlowForce force(dataFile("tiny.safetensors"));
    stringstream buffer;
    XmlSerializer::serialize<SmoothFlowForce>(&force, "Force", buffer);
    string xml = buffer.str();
    size_t at = xml.find("version=\"1\"");
    ASSERT(at != string::npos);
    xml.replace(at, 11, "version=\"2\"");
    stringstream newer(xml);
    ASSERT_THROWS(delete XmlSerializer::deserialize<SmoothFlowForce>(newer), "unsupported version 2");
}

static void testCorruptEmbeddedModel() {
    SmoothFlowForce force(dataFile("tiny.safetensors"));
    stringstream buffer;
    XmlSerializer::serialize<SmoothFlowForce>(&force, "Force", buffer);
    string xml = buffer.str();
    size_t at = xml.find("model=\"");
    ASSERT(at != string::npos);
    xml.replace(at + 7, 4, "!!!!");
    stringstream corrupt(xml);
    ASSERT_THROWS(delete XmlSerializer::deserialize<SmoothFlowForce>(corrupt), "not valid base64");
}

static vector<char> bytesOf(const string& s) {
    return vector<char>(s.begin(), s.end());
}

/** RFC 4648 section 10: every padding case, both directions; all 256 byte values round trip. */
static void testBase64Vectors() {
    const vector<pair<string, string>> vectors = {
        {"", ""}, {"f", "Zg=="}, {"fo", "Zm8="}, {"foo", "Zm9v"},
        {"foob", "Zm9vYg=="}, {"fooba", "Zm9vYmE="}, {"foobar", "Zm9vYmFy"}};
    for (const auto& v : vectors) {
        ASSERT_EQUAL(v.second, base64Encode(bytesOf(v.first)));
        ASSERT(base64Decode(v.second) == bytesOf(v.first));
    }
    // Whitespace (XML line breaks) is skipped.
    ASSERT(base64Decode(" Zm9v\nYmE=\r\n") == bytesOf("fooba"));
    // The whole alphabet: bytes 0..255 and back, and a known prefix ("AAECAwQF" encodes 0..5).
    vector<char> all;
    for (int i = 0; i < 256; i++)
        all.push_back((char) i);
    string text = base64Encode(all);
    ASSERT_EQUAL(344, (int) text.size());
    ASSERT_EQUAL("AAECAwQF", text.substr(0, 8));
    ASSERT_EQUAL("+/w==", text.substr(339));  // 0xfe 0xff: '+' and '/' appear
    ASSERT(base64Decode(text) == all);
}

/** Invalid input is refused: characters outside the alphabet, misplaced padding, truncation. */
static void testBase64Rejects() {
    for (const string& bad : {"Zm9v!", "Zm-v", "Zm_v", "Zm9\x80", "Zg=a", "Z===", "====", "Zg==Zg==", "Zm=v"})
        ASSERT_THROWS(base64Decode(bad), "not valid base64");
    for (const string& truncated : {"Z", "Zm", "Zm9", "Zm9vY", "Zm9vYg", "Zm9vYg="})
        ASSERT_THROWS(base64Decode(truncated), "truncated");
}

int main() {
    try {
        registerSmoothFlowReferenceKernelFactories();
        testBase64Vectors();
        testBase64Rejects();
        testRoundTrip("tiny", false);
        testRoundTrip("wall", true);
        testDefaultMolecules();
        testNewerVersionRejected();
        testCorruptEmbeddedModel();
    }
    catch (const exception& e) {
        cout << "exception: " << e.what() << endl;
        return 1;
    }
    cout << "Done" << endl;
    return 0;
}
