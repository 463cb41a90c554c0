{
  "targets": [
    {
      "target_name": "fused_native",
      "sources": [
        "native/addon.cc",
        "native/errors.cc",
        "native/io.cc",
        "native/lease.cc",
        "native/sys.cc"
      ],
      "dependencies": [
        "<!(node -p \"require('node-addon-api').targets\"):node_addon_api"
      ],
      "defines": ["NAPI_VERSION=8", "_GNU_SOURCE", "_FILE_OFFSET_BITS=64"],
      "cflags_cc": ["-std=c++17", "-Wall", "-Wextra", "-Wno-missing-field-initializers"]
    }
  ]
}
