/*
 * XML round trip of SmoothFlowForce: every getter agrees and a Context built
 * from the copy gives identical energies and forces.  The base64 codec that
 * embeds the model in the XML, on the RFC 4648 test vectors; the SHA-256 that
 * guards it, on the NIST vectors; the checksum's verification and versions.
 */

#include "Base64.h"
#include "Sha256.h"
#include "ReferenceSmoothFlowKernelFactory.h"
#include "SmoothFlowForce.h"
#include "SmoothFlowTestUtilities.h"
#include "openmm/Context.h"
#include "openmm/Platform.h"
#include "openmm/State.h"
#include "openmm/System.h"
#include "openmm/VerletIntegrator.h"
#include "openmm/serialization/XmlSerializer.h"
#include "smoothflow.h"
#include <algorithm>
#include <array>
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

static vector<char> bytesOf(const string& s) {
    return vector<char>(s.begin(), s.end());
}

static void testNewerVersionRejected() {
    SmoothFlowForce force(dataFile("tiny.safetensors"));
    stringstream buffer;
    XmlSerializer::serialize<SmoothFlowForce>(&force, "Force", buffer);
    string xml = buffer.str();
    size_t at = xml.find("version=\"3\"");
    ASSERT(at != string::npos);
    xml.replace(at, 11, "version=\"4\"");
    stringstream newer(xml);
    ASSERT_THROWS(delete XmlSerializer::deserialize<SmoothFlowForce>(newer), "unsupported version 4");
}

static string serialized(const SmoothFlowForce& force) {
    stringstream buffer;
    XmlSerializer::serialize<SmoothFlowForce>(&force, "Force", buffer);
    return buffer.str();
}

/** The value of attribute `name` in xml, and where it starts. */
static string attribute(const string& xml, const string& name, size_t* where = nullptr) {
    size_t at = xml.find(" " + name + "=\"");
    ASSERT(at != string::npos);
    at += name.size() + 3;
    if (where != nullptr)
        *where = at;
    return xml.substr(at, xml.find('"', at) - at);
}

/** Version 2 records the SHA-256 of the model bytes; a model changed inside the XML (here a
 * base64 block that decodes to other, valid-looking bytes) is refused with the force named. */
static void testChecksumVerified() {
    SmoothFlowForce force(dataFile("tiny.safetensors"));
    force.setName("flow A");
    string xml = serialized(force);
    ASSERT_EQUAL(sha256Hex(force.getModelBytes()), attribute(xml, "modelSha256"));
    size_t at;
    string model = attribute(xml, "model", &at);
    // Swap two 4-character blocks in the middle of the data: valid base64 of other bytes.
    size_t middle = model.size() / 2 / 4 * 4;
    string swapped = xml;
    swapped.replace(at + middle, 4, model.substr(middle + 4, 4));
    swapped.replace(at + middle + 4, 4, model.substr(middle, 4));
    ASSERT(base64Decode(attribute(swapped, "model")) != force.getModelBytes());
    stringstream in(swapped);
    ASSERT_THROWS(delete XmlSerializer::deserialize<SmoothFlowForce>(in), "SmoothFlowForce 'flow A'",
                  "the embedded model's SHA-256", "does not match");
    // A checksum that is not the model's, the model intact: refused the same way.
    string wrong = xml;
    size_t hashAt;
    attribute(wrong, "modelSha256", &hashAt);
    wrong[hashAt] = wrong[hashAt] == '0' ? '1' : '0';
    stringstream in2(wrong);
    ASSERT_THROWS(delete XmlSerializer::deserialize<SmoothFlowForce>(in2), "does not match");
}

/** Version 1 has no checksum and still loads; version 2 or 3 without one is refused. */
static void testVersions() {
    SmoothFlowForce force(dataFile("tiny.safetensors"));
    force.addMolecule({5, 4, 3, 2, 1, 0});
    string xml = serialized(force);
    size_t hashAt;
    string hash = attribute(xml, "modelSha256", &hashAt);
    string without = xml;
    without.erase(hashAt - string(" modelSha256=\"").size(), string(" modelSha256=\"\"").size() + hash.size());
    ASSERT(without.find("modelSha256") == string::npos);
    stringstream in(without);
    ASSERT_THROWS(delete XmlSerializer::deserialize<SmoothFlowForce>(in), "lacks modelSha256");
    string version1 = without;
    version1.replace(version1.find("version=\"3\""), 11, "version=\"1\"");
    stringstream in1(version1);
    unique_ptr<SmoothFlowForce> copy(XmlSerializer::deserialize<SmoothFlowForce>(in1));
    assertSameForce(force, *copy);
}

/** Version 3 keeps the weight precision: a float32 force comes back float32, with the same
 * energy; a version-2 XML (no weightPrecision) reads as float64; a bad value is refused. */
static void testWeightPrecision() {
    SmoothFlowForce force(dataFile("tiny.safetensors"));
    ASSERT_EQUAL(SmoothFlowForce::WeightsFloat64, force.getWeightPrecision());
    force.setWeightPrecision(SmoothFlowForce::WeightsFloat32);
    string xml = serialized(force);
    ASSERT_EQUAL("1", attribute(xml, "weightPrecision"));
    stringstream in(xml);
    unique_ptr<SmoothFlowForce> copy(XmlSerializer::deserialize<SmoothFlowForce>(in));
    ASSERT_EQUAL(SmoothFlowForce::WeightsFloat32, copy->getWeightPrecision());
    ASSERT(sf_model_weight_precision(copy->getModel().get()) == SF_WEIGHTS_FLOAT32);
    size_t at;
    attribute(xml, "weightPrecision", &at);
    string version2 = xml;
    version2.erase(at - string(" weightPrecision=\"").size(), string(" weightPrecision=\"1\"").size());
    version2.replace(version2.find("version=\"3\""), 11, "version=\"2\"");
    stringstream in2(version2);
    unique_ptr<SmoothFlowForce> old(XmlSerializer::deserialize<SmoothFlowForce>(in2));
    ASSERT_EQUAL(SmoothFlowForce::WeightsFloat64, old->getWeightPrecision());
    string bad = xml;
    bad[at] = '7';
    stringstream in3(bad);
    ASSERT_THROWS(delete XmlSerializer::deserialize<SmoothFlowForce>(in3), "weightPrecision 7");
}

static string hexOf(const array<unsigned char, 32>& digest) {
    static const char digits[] = "0123456789abcdef";
    string hex;
    for (unsigned char b : digest) {
        hex.push_back(digits[b >> 4]);
        hex.push_back(digits[b & 15]);
    }
    return hex;
}

/** FIPS 180-4 / NIST CAVS example vectors, fed whole and in uneven pieces. */
static void testSha256Vectors() {
    const string m448 = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    const string m896 = "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqr"
                        "lmnopqrsmnopqrstnopqrstu";
    ASSERT_EQUAL(56, (int) m448.size());
    ASSERT_EQUAL(112, (int) m896.size());
    const vector<pair<string, string>> vectors = {
        {"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
        {"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
        {m448, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
        {m896, "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1"}};
    for (const auto& v : vectors) {
        ASSERT_EQUAL(v.second, sha256Hex(bytesOf(v.first)));
        Sha256 pieces;
        for (size_t i = 0; i < v.first.size(); i += 7)
            pieces.update(v.first.data() + i, min<size_t>(7, v.first.size() - i));
        ASSERT_EQUAL(v.second, hexOf(pieces.digest()));
    }
    // One million 'a': whole, and as 1000 pieces of 1000.
    const string million(1000000, 'a');
    const string expected = "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0";
    ASSERT_EQUAL(expected, sha256Hex(bytesOf(million)));
    Sha256 pieces;
    for (int i = 0; i < 1000; i++)
        pieces.update(million.data() + 1000 * i, 1000);
    ASSERT_EQUAL(expected, hexOf(pieces.digest()));
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
    // Non-canonical: "Zh==" and "Zm9=" decode to the bytes of "Zg==" and "Zm8=" in lenient decoders.
    for (const string& bad : {"Zh==", "Zm9="})
        ASSERT_THROWS(base64Decode(bad), "non-zero bits");
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
        testSha256Vectors();
        testChecksumVerified();
        testVersions();
        testWeightPrecision();
    }
    catch (const exception& e) {
        cout << "exception: " << e.what() << endl;
        return 1;
    }
    cout << "Done" << endl;
    return 0;
}
