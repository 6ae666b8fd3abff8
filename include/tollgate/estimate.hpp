// tollgate — rate limits and budgets for LLM APIs. MIT licence, see LICENSE.
//
// estimate.hpp: a conservative token estimate from UTF-8 text, for admission
// before the server has counted anything.
//
// This is an estimate, not a tokenizer. It uses the rules of thumb Kimi
// publishes: one token is about 3-4 English characters, or about 1.5-2
// Chinese characters. The default (`conservative`) takes the low ends - 3 and
// 1.5 characters per token - so it errs high, because an estimate that is too
// low causes 429s; `typical` takes 4 and 2. Counting:
//   * ASCII (letters, digits, punctuation, whitespace): 1 / chars_per_token each;
//   * CJK ideographs, kana, hangul, CJK punctuation and full-width forms:
//     1 / cjk_chars_per_token each;
//   * any other code point (accented Latin, Cyrillic, emoji ...): 1 token each
//     (the high side: such text often splits into byte-level tokens);
//   * every invalid UTF-8 byte: 1 token (never a crash);
// then the total is rounded up, the safety margin (percent) added, rounded up.
// Chat requests add per-message and per-request overheads (defaults 4 and 2,
// the OpenAI cookbook's convention: Kimi does not publish its framing).
#ifndef TOLLGATE_ESTIMATE_HPP
#define TOLLGATE_ESTIMATE_HPP

#include <tollgate/config.hpp>

#include <cstddef>
#include <cstdint>
#include <string_view>

TOLLGATE_BEGIN_NAMESPACE

struct estimate_options {
  // Characters per token, in tenths (30 = 3.0).
  std::uint32_t ascii_tenths_per_token = 30;
  std::uint32_t cjk_tenths_per_token = 15;
  std::uint32_t margin_percent = 0;       // added on top, rounded up
  std::uint32_t per_message_overhead = 4;  // chat framing per message
  std::uint32_t per_request_overhead = 2;  // and per request

  static constexpr estimate_options conservative() noexcept { return estimate_options{}; }
  static constexpr estimate_options typical() noexcept { return estimate_options{40, 20, 0, 4, 2}; }
};

// Counts of what the text is made of (whole code points or bytes).
struct text_census {
  std::uint64_t ascii = 0, cjk = 0, other = 0, invalid_bytes = 0;
};

namespace detail {
constexpr bool is_cjk(std::uint32_t cp) noexcept {
  return (cp >= 0x3000 && cp <= 0x303F) ||   // CJK symbols and punctuation
         (cp >= 0x3040 && cp <= 0x30FF) ||   // hiragana, katakana
         (cp >= 0x3400 && cp <= 0x4DBF) ||   // CJK extension A
         (cp >= 0x4E00 && cp <= 0x9FFF) ||   // CJK unified ideographs
         (cp >= 0xAC00 && cp <= 0xD7AF) ||   // hangul syllables
         (cp >= 0xF900 && cp <= 0xFAFF) ||   // CJK compatibility ideographs
         (cp >= 0xFF00 && cp <= 0xFFEF) ||   // half- and full-width forms
         (cp >= 0x20000 && cp <= 0x3FFFF);   // CJK extensions B onwards
}
}  // namespace detail

// Decodes UTF-8 strictly (no overlongs, no surrogates, nothing above U+10FFFF);
// each byte that does not start a valid sequence counts as invalid.
constexpr text_census census(std::string_view s) noexcept {
  text_census c;
  std::size_t i = 0;
  while (i < s.size()) {
    const unsigned char b = static_cast<unsigned char>(s[i]);
    if (b < 0x80) {
      ++c.ascii;
      ++i;
      continue;
    }
    std::size_t len = 0;
    std::uint32_t cp = 0, min = 0;
    if ((b & 0xE0) == 0xC0) {
      len = 2;
      cp = b & 0x1Fu;
      min = 0x80;
    } else if ((b & 0xF0) == 0xE0) {
      len = 3;
      cp = b & 0x0Fu;
      min = 0x800;
    } else if ((b & 0xF8) == 0xF0) {
      len = 4;
      cp = b & 0x07u;
      min = 0x10000;
    }
    bool ok = len != 0 && i + len <= s.size();
    for (std::size_t k = 1; ok && k < len; ++k) {
      const unsigned char cb = static_cast<unsigned char>(s[i + k]);
      if ((cb & 0xC0) != 0x80)
        ok = false;
      else
        cp = (cp << 6) | (cb & 0x3Fu);
    }
    if (ok && (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))) ok = false;
    if (!ok) {
      ++c.invalid_bytes;
      ++i;
      continue;
    }
    if (detail::is_cjk(cp))
      ++c.cjk;
    else
      ++c.other;
    i += len;
  }
  return c;
}

// Estimated tokens for a piece of text (no chat overheads).
constexpr std::uint64_t estimate_tokens(std::string_view text,
                                        estimate_options o = estimate_options::conservative()) noexcept {
  const text_census c = census(text);
  const std::uint64_t at = o.ascii_tenths_per_token ? o.ascii_tenths_per_token : 1;
  const std::uint64_t ct = o.cjk_tenths_per_token ? o.cjk_tenths_per_token : 1;
  // Sum in units of 1 / (at * ct) tokens, then round up once.
  const std::uint64_t num = c.ascii * 10 * ct + c.cjk * 10 * at + (c.other + c.invalid_bytes) * at * ct;
  const std::uint64_t den = at * ct;
  std::uint64_t t = num / den + (num % den != 0 ? 1 : 0);
  if (o.margin_percent) t += (t * o.margin_percent + 99) / 100;
  return t;
}

// Estimated prompt tokens of a chat request: each message's text plus the
// per-message overhead, plus the per-request overhead.
struct chat_message {
  std::string_view role;
  std::string_view content;
};
template <class Range>
constexpr std::uint64_t estimate_chat_tokens(const Range& messages,
                                             estimate_options o = estimate_options::conservative()) noexcept {
  std::uint64_t t = o.per_request_overhead;
  for (const chat_message& m : messages)
    t += estimate_tokens(m.role, o) + estimate_tokens(m.content, o) + o.per_message_overhead;
  return t;
}

TOLLGATE_END_NAMESPACE

#endif  // TOLLGATE_ESTIMATE_HPP
