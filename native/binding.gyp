{
  "targets": [
    {
      "target_name": "weft_native",
      "sources": [
        "src/addon.cc",
        "src/object.cc",
        "src/program.cc",
        "src/link.cc",
        "src/map.cc",
        "src/ringbuf.cc",
        "src/netns.cc",
        "src/fdpass.cc",
        "src/route.cc"
      ],
      "include_dirs": [
        "<!(node -p \"require('node-addon-api').include_dir\")",
        "<!@(pkg-config --cflags-only-I libbpf 2>/dev/null || true)"
      ],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS", "_GNU_SOURCE"],
      "cflags!": ["-fno-exceptions", "-fno-rtti"],
      "cflags_cc!": ["-fno-exceptions", "-fno-rtti", "-std=gnu++17", "-std=gnu++20"],
      "cflags": ["-Wall", "-Wextra", "-Werror", "-fexceptions"],
      "cflags_cc": ["-std=c++17", "-Wall", "-Wextra", "-Werror", "-fexceptions"],
      "libraries": [
        "<!@(pkg-config --libs libbpf 2>/dev/null || echo -lbpf)",
        "-lelf",
        "-lz",
        "-lpthread"
      ]
    }
  ]
}
