// Structured logging: one JSON object per line on stderr, as every FlexGate server logs.
//
//   FG_LOG_INFO("snapshot applied", {{"version", 7}, {"workers", 2}});
//
// Thread-safe: each line is formatted first and written with a single write(2). Never log a
// secret (API keys, tokens): log key ids or hash prefixes instead.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace flexgate {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3 };

using LogValue = std::variant<std::string, std::string_view, const char*, int64_t, uint64_t, int,
                              unsigned, double, bool>;
using LogField = std::pair<std::string_view, LogValue>;

// Sets the process-wide component name ("agent", "cp", ...) and the minimum level printed.
void InitLogging(std::string_view component, LogLevel min_level = LogLevel::kInfo);
bool LogEnabled(LogLevel level);
void Log(LogLevel level, std::string_view message, std::initializer_list<LogField> fields = {});

// Appends `s` to `out` as a JSON string literal (with quotes), escaping as RFC 8259 requires.
void AppendJsonString(std::string& out, std::string_view s);

}  // namespace flexgate

#define FG_LOG_DEBUG(...) ::flexgate::Log(::flexgate::LogLevel::kDebug, __VA_ARGS__)
#define FG_LOG_INFO(...) ::flexgate::Log(::flexgate::LogLevel::kInfo, __VA_ARGS__)
#define FG_LOG_WARN(...) ::flexgate::Log(::flexgate::LogLevel::kWarn, __VA_ARGS__)
#define FG_LOG_ERROR(...) ::flexgate::Log(::flexgate::LogLevel::kError, __VA_ARGS__)
