// The groups of functions the addon exports; each .cc file registers its own.
#pragma once

#include <napi.h>

namespace fused {

void InitIo(Napi::Env env, Napi::Object exports);
void InitLease(Napi::Env env, Napi::Object exports);

}  // namespace fused
