// Entry point of fused_native: registers the I/O and lease functions.
#include <napi.h>

#include "bindings.h"

namespace {

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  fused::InitIo(env, exports);
  fused::InitLease(env, exports);
  return exports;
}

}  // namespace

NODE_API_MODULE(fused_native, Init)
