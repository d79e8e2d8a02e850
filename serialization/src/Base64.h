#ifndef SMOOTHFLOW_BASE64_H_
#define SMOOTHFLOW_BASE64_H_

#include <string>
#include <vector>

namespace SmoothFlowPlugin {

/**
 * Standard base64 (RFC 4648, with padding), used to embed model files in XML.
 * @private
 */
std::string base64Encode(const std::vector<char>& bytes);

/**
 * Decode standard base64; whitespace is skipped.  Throws an OpenMMException on
 * any other character outside the alphabet, on a truncated input, and on a
 * non-canonical final block (non-zero bits before the padding).
 * @private
 */
std::vector<char> base64Decode(const std::string& text);

} // namespace SmoothFlowPlugin

#endif /*SMOOTHFLOW_BASE64_H_*/
