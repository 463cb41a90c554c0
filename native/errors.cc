// Builds Node-style errors from errno values.
#include "errors.h"

#include <cerrno>
#include <cstring>

#include "sys.h"

namespace fused {

namespace {

// FIEMAP failures get the reasons filefrag gives them, not the bare strerror text.
const char* FiemapReason(int err) {
  switch (err) {
    case EBADR: return "FIEMAP flags not supported by this file system";
    case ENOTTY:
    case EOPNOTSUPP: return "FIEMAP not supported by this file system";
    case EPERM: return "FIEMAP not permitted on this file";
    default: return nullptr;
  }
}

}  // namespace

Napi::Error MakeError(Napi::Env env, const Fault& fault) {
  std::string code;
  std::string text;
  int errno_value = fault.err;  // 0: not an errno, no .errno property
  if (fault.err == kErrNotRegular) {
    code = "ENOTREG";
    text = "not a regular file";
    errno_value = 0;
  } else if (fault.err == kErrTooMany) {
    code = "E2BIG";
    text = "more extents than the limit";
    errno_value = E2BIG;
  } else if (fault.err == kErrTooBig) {
    code = "ERANGE";
    text = "extent offset or length beyond 2^53";
    errno_value = ERANGE;
  } else {
    const char* name = strerrorname_np(fault.err);
    code = name != nullptr ? name : "E" + std::to_string(fault.err);
    const char* reason = fault.syscall == "ioctl(FS_IOC_FIEMAP)" ? FiemapReason(fault.err) : nullptr;
    if (fault.err == ETIME && fault.syscall == "pwrite") reason = "lease deadline passed before the write was issued";
    text = reason != nullptr ? reason : strerror(fault.err);
  }
  std::string message = code + ": " + text + ", " + fault.syscall;
  if (fault.has_path) message += " '" + fault.path + "'";
  Napi::Error error = Napi::Error::New(env, message);
  error.Set("code", Napi::String::New(env, code));
  if (errno_value != 0) error.Set("errno", Napi::Number::New(env, errno_value));
  error.Set("syscall", Napi::String::New(env, fault.syscall));
  if (fault.has_path) error.Set("path", Napi::String::New(env, fault.path));
  return error;
}

bool ThrowIfNot(Napi::Env env, bool ok, const char* what) {
  if (!ok) Napi::TypeError::New(env, what).ThrowAsJavaScriptException();
  return !ok;
}

bool ThrowFault(Napi::Env env, int rc, const char* syscall) {
  if (rc >= 0) return false;
  Fault fault;
  fault.err = -rc;
  fault.syscall = syscall;
  MakeError(env, fault).ThrowAsJavaScriptException();
  return true;
}

}  // namespace fused
