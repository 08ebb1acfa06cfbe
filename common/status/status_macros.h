// REGTOPK_RETURN_IF_ERROR / REGTOPK_ASSIGN_OR_RETURN: early-return helpers for absl::Status.
// Debian 12's Abseil (20220623) ships neither, so they are defined once here.
#ifndef REGTOPK_COMMON_STATUS_STATUS_MACROS_H_
#define REGTOPK_COMMON_STATUS_STATUS_MACROS_H_

#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

// Evaluates `expr` (an absl::Status) and returns it from the enclosing function if not OK.
#define REGTOPK_RETURN_IF_ERROR(expr)                  \
  do {                                                 \
    ::absl::Status regtopk_status_ = (expr);           \
    if (!regtopk_status_.ok()) return regtopk_status_; \
  } while (0)

#define REGTOPK_STATUS_CONCAT_INNER_(a, b) a##b
#define REGTOPK_STATUS_CONCAT_(a, b) REGTOPK_STATUS_CONCAT_INNER_(a, b)

// Evaluates `rexpr` (an absl::StatusOr<T>); on error returns its status, else moves the value
// into `lhs` (a declaration such as `auto x` or an existing lvalue).
#define REGTOPK_ASSIGN_OR_RETURN(lhs, rexpr) \
  REGTOPK_ASSIGN_OR_RETURN_IMPL_(REGTOPK_STATUS_CONCAT_(regtopk_statusor_, __LINE__), lhs, rexpr)

#define REGTOPK_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, rexpr) \
  auto statusor = (rexpr);                                   \
  if (!statusor.ok()) return std::move(statusor).status();   \
  lhs = std::move(statusor).value()

#endif  // REGTOPK_COMMON_STATUS_STATUS_MACROS_H_
