// Turns a failed system call (-errno, the call's name, the path) into a JS Error shaped like Node's own.
#pragma once

#include <napi.h>

#include <string>

namespace fused {

struct Fault {
  int err = 0;              // positive errno, or one of the kErr* codes of sys.h
  std::string syscall;      // e.g. "openat2", "ioctl(FS_IOC_FIEMAP)"
  std::string path;         // shown and set as .path when has_path
  bool has_path = false;
};

// Error with .code (errno name), .errno (positive), .syscall, .path and "CODE: text, syscall 'path'".
Napi::Error MakeError(Napi::Env env, const Fault& fault);
// For synchronous calls: throw the error for a negative errno rc; false (nothing thrown) when rc >= 0.
bool ThrowFault(Napi::Env env, int rc, const char* syscall);

// Throws a TypeError and returns true when `ok` is false (the TS layer validates first; this is the backstop).
bool ThrowIfNot(Napi::Env env, bool ok, const char* what);

}  // namespace fused
