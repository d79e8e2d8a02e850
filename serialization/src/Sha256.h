#ifndef SMOOTHFLOW_SHA256_H_
#define SMOOTHFLOW_SHA256_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace SmoothFlowPlugin {

/**
 * SHA-256 (FIPS 180-4), written here so that the serialized force can carry a
 * checksum of its embedded model without a cryptographic library.  Feed bytes
 * with update() in any pieces, then digest() once.
 * @private
 */
class Sha256 {
public:
    Sha256();
    void update(const void* data, size_t size);
    /** The 32-byte digest of everything fed; the object is spent afterwards. */
    std::array<unsigned char, 32> digest();
private:
    void compress(const unsigned char* block);
    uint32_t state[8];
    unsigned char buffer[64];
    size_t buffered;
    uint64_t length;  // bytes fed so far
};

/** The SHA-256 of bytes as 64 lowercase hexadecimal digits. @private */
std::string sha256Hex(const std::vector<char>& bytes);

} // namespace SmoothFlowPlugin

#endif /*SMOOTHFLOW_SHA256_H_*/
