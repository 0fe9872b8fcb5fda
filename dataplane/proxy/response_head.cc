#include "dataplane/proxy/response_head.h"

#include <array>
#include <cstring>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "dataplane/proxy/http_util.h"

namespace flexgate::dataplane {

namespace {

enum : uint8_t { kToken = 1, kValue = 2 };

// Per byte: kToken for tchar (RFC 9110 section 5.6.2), kValue for what a field value or reason
// phrase may hold (HTAB, SP, VCHAR, obs-text).
constexpr std::array<uint8_t, 256> kCharClass = [] {
  std::array<uint8_t, 256> t{};
  for (int c = 0; c < 256; ++c) {
    uint8_t v = 0;
    if (c == '\t' || (c >= 0x20 && c != 0x7f)) v |= kValue;
    bool alnum = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
    if (alnum || std::string_view("!#$%&'*+-.^_`|~").find(static_cast<char>(c)) !=
                     std::string_view::npos) {
      v |= kToken;
    }
    t[static_cast<size_t>(c)] = v;
  }
  return t;
}();

inline uint8_t Class(char c) { return kCharClass[static_cast<unsigned char>(c)]; }

inline bool IsOws(char c) { return c == ' ' || c == '\t'; }

// The end of a header name starting at p: the first byte in [p, end) that is not a token
// character, or `end`. Letters, digits and '-' (nearly every name) are checked 16 at a time.
inline const char* FindNameEnd(const char* p, const char* end) {
#if defined(__SSE2__)
  const __m128i to_letters = _mm_set1_epi8(static_cast<char>(0x80 - 'a'));
  const __m128i letters = _mm_set1_epi8(static_cast<char>(-128 + 26));
  const __m128i to_digits = _mm_set1_epi8(static_cast<char>(0x80 - '0'));
  const __m128i digits = _mm_set1_epi8(static_cast<char>(-128 + 10));
  const __m128i lower = _mm_set1_epi8(0x20);
  const __m128i dash = _mm_set1_epi8('-');
  while (end - p >= 16) {
    __m128i x = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    // Unsigned range checks as signed compares after shifting the range to the bottom.
    __m128i letter =
        _mm_cmplt_epi8(_mm_add_epi8(_mm_or_si128(x, lower), to_letters), letters);
    __m128i digit = _mm_cmplt_epi8(_mm_add_epi8(x, to_digits), digits);
    __m128i ok = _mm_or_si128(_mm_or_si128(letter, digit), _mm_cmpeq_epi8(x, dash));
    unsigned mask = ~static_cast<unsigned>(_mm_movemask_epi8(ok)) & 0xffffu;
    if (mask != 0) {
      p += __builtin_ctz(mask);
      break;
    }
    p += 16;
  }
#endif
  // The rest, and the other token characters ('!', '#', '_', ...), one at a time.
  while (p < end && (Class(*p) & kToken)) ++p;
  return p;
}

// The first byte in [p, end) that a field value or reason phrase may not hold (a control
// character other than HTAB, or DEL), or `end`. The CR that ends a line is one of them, so this
// finds the end of a well-formed line and any bad byte before it in one pass.
inline const char* FindLineEnd(const char* p, const char* end) {
#if defined(__SSE2__)
  const __m128i flip = _mm_set1_epi8(static_cast<char>(0x80));
  const __m128i below_space = _mm_set1_epi8(static_cast<char>(0x20 ^ 0x80));
  const __m128i tab = _mm_set1_epi8('\t');
  const __m128i del = _mm_set1_epi8(0x7f);
  while (end - p >= 16) {
    __m128i x = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    // Unsigned x < 0x20 as a signed compare of x ^ 0x80 (obs-text, 0x80..0xFF, stays valid).
    __m128i ctl = _mm_cmplt_epi8(_mm_xor_si128(x, flip), below_space);
    __m128i bad = _mm_or_si128(_mm_andnot_si128(_mm_cmpeq_epi8(x, tab), ctl),
                               _mm_cmpeq_epi8(x, del));
    int mask = _mm_movemask_epi8(bad);
    if (mask != 0) return p + __builtin_ctz(static_cast<unsigned>(mask));
    p += 16;
  }
#endif
  for (; p < end; ++p) {
    if (!(Class(*p) & kValue)) return p;
  }
  return end;
}

}  // namespace

bool ParseSimpleResponseHead(std::string_view in, size_t max_head, SimpleResponseHead* out,
                             std::vector<std::pair<std::string_view, std::string_view>>* headers,
                             std::vector<uint16_t>* classes) {
  headers->clear();
  classes->clear();
  const char* p = in.data();
  const size_t n = in.size() < max_head ? in.size() : max_head;
  // Status line: "HTTP/1.1 NNN " is 13 bytes, then the reason phrase and CRLF.
  if (n < 15 || std::memcmp(p, "HTTP/1.1 ", 9) != 0) return false;
  int status = 0;
  for (size_t i = 9; i < 12; ++i) {
    if (p[i] < '0' || p[i] > '9') return false;
    status = status * 10 + (p[i] - '0');
  }
  if (status < 200 || status > 599 || status == 204 || status == 304 || p[12] != ' ') {
    return false;
  }
  const char* end = p + n;
  const char* cr = FindLineEnd(p + 13, end);
  if (cr + 1 >= end || cr[0] != '\r' || cr[1] != '\n') return false;
  out->status = status;
  out->reason = std::string_view(p + 13, static_cast<size_t>(cr - (p + 13)));
  out->keep_alive = true;
  out->connection = {};
  bool have_length = false;
  const char* line = cr + 2;
  for (;;) {
    if (line + 1 >= end) return false;  // incomplete
    if (line[0] == '\r') {
      if (line[1] != '\n') return false;
      break;
    }
    // Name: one or more token characters, then ':' (no space before it).
    const char* q = FindNameEnd(line, end);
    if (q == line || q >= end || *q != ':') return false;
    std::string_view name(line, static_cast<size_t>(q - line));
    ++q;
    while (q < end && IsOws(*q)) ++q;
    const char* value_begin = q;
    const char* eol = FindLineEnd(q, end);
    if (eol + 1 >= end || eol[0] != '\r' || eol[1] != '\n') return false;
    const char* value_end = eol;
    while (value_end > value_begin && IsOws(value_end[-1])) --value_end;
    std::string_view value(value_begin, static_cast<size_t>(value_end - value_begin));
    // A next line that starts with a space or tab (obs-fold) has no token to start its name,
    // so the name check below declines it and llhttp decides.
    line = eol + 2;

    // llhttp reads the values of these two headers itself and ends a number or a token at a
    // space only: a tab inside or after one makes it read the value differently.
    auto has_tab = [&] {
      return std::memchr(value_begin, '\t', static_cast<size_t>(eol - value_begin)) != nullptr;
    };
    uint16_t cls = ClassifyHeader(name);
    if (cls & kHeaderHopByHop) {
      if (cls & kHeaderConnection) {
        if (has_tab()) return false;
        if (HeaderNameEquals(value, "close")) {
          out->keep_alive = false;
        } else if (!HeaderNameEquals(value, "keep-alive")) {
          return false;
        }
        out->connection = value;
      } else if (!HeaderNameEquals(name, "keep-alive")) {
        return false;  // Transfer-Encoding, Upgrade, TE, Trailer, Proxy-*
      }
    } else if (name.size() == 14 && HeaderNameEquals(name, "content-length")) {
      if (have_length || value.empty() || value.size() > 18 || has_tab()) return false;
      uint64_t length = 0;
      for (char c : value) {
        if (c < '0' || c > '9') return false;
        length = length * 10 + static_cast<uint64_t>(c - '0');
      }
      out->content_length = length;
      have_length = true;
    }
    headers->emplace_back(name, value);
    if (value_begin == name.data() + name.size() + 2 && value_begin[-1] == ' ' &&
        value_end == eol) {
      cls |= kHeaderLineCanonical;
    }
    classes->push_back(cls);
  }
  if (!have_length) return false;
  out->head_size = static_cast<size_t>(line + 2 - p);
  return true;
}

}  // namespace flexgate::dataplane
