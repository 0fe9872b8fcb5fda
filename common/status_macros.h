// Early-return helpers for absl::Status / absl::StatusOr. Abseil 20220623 ships none of its own.
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define FG_STATUS_CONCAT_INNER(a, b) a##b
#define FG_STATUS_CONCAT(a, b) FG_STATUS_CONCAT_INNER(a, b)

// Returns the status from the enclosing function when `expr` is not OK.
#define FG_RETURN_IF_ERROR(expr)                  \
  do {                                            \
    ::absl::Status fg_status_ = (expr);           \
    if (!fg_status_.ok()) return fg_status_;      \
  } while (0)

// Declares or assigns `lhs` from the value of a StatusOr, or returns its error.
#define FG_ASSIGN_OR_RETURN(lhs, expr) \
  FG_ASSIGN_OR_RETURN_IMPL(FG_STATUS_CONCAT(fg_statusor_, __LINE__), lhs, expr)

#define FG_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                             \
  if (!tmp.ok()) return std::move(tmp).status(); \
  lhs = std::move(tmp).value()
