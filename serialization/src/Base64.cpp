#include "Base64.h"
#include "openmm/OpenMMException.h"
#include <cctype>

using namespace std;

namespace SmoothFlowPlugin {

static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

string base64Encode(const vector<char>& bytes) {
    string text;
    text.reserve(4 * ((bytes.size() + 2) / 3));
    for (size_t i = 0; i < bytes.size(); i += 3) {
        size_t n = bytes.size() - i < 3 ? bytes.size() - i : 3;
        unsigned int block = 0;
        for (size_t j = 0; j < 3; j++)
            block = (block << 8) | (j < n ? (unsigned char) bytes[i + j] : 0u);
        for (size_t j = 0; j < 4; j++)
            text.push_back(j <= n ? alphabet[(block >> (18 - 6 * j)) & 63] : '=');
    }
    return text;
}

static int decodeChar(char c) {
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

vector<char> base64Decode(const string& text) {
    vector<char> bytes;
    bytes.reserve(3 * (text.size() / 4));
    unsigned int block = 0;
    int count = 0, padding = 0;
    for (char c : text) {
        if (isspace((unsigned char) c))
            continue;
        if (c == '=') {
            padding++;
            block <<= 6;
        }
        else {
            int value = decodeChar(c);
            if (value < 0 || padding > 0)
                throw OpenMM::OpenMMException("SmoothFlowForce: the embedded model is not valid base64");
            block = (block << 6) | value;
        }
        if (++count == 4) {
            if (padding > 2)
                throw OpenMM::OpenMMException("SmoothFlowForce: the embedded model is not valid base64");
            // Canonical form only (RFC 4648 section 3.5): the bits a padded block drops are zero,
            // so no two texts decode to the same bytes.
            if ((block & ((1u << (8 * padding)) - 1)) != 0)
                throw OpenMM::OpenMMException("SmoothFlowForce: the embedded model is not valid base64 "
                                              "(non-zero bits before the padding)");
            for (int j = 0; j < 3 - padding; j++)
                bytes.push_back((char) ((block >> (16 - 8 * j)) & 255));
            block = 0;
            count = 0;
            if (padding > 0)
                padding = 3;  // nothing may follow a padded block
        }
    }
    if (count != 0)
        throw OpenMM::OpenMMException("SmoothFlowForce: the embedded model is truncated (base64 length is not a multiple of 4)");
    return bytes;
}

} // namespace SmoothFlowPlugin
