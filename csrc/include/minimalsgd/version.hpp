// The one source of truth for the version: CMake and the Python metadata both read this file.
#pragma once

#define MINIMALSGD_VERSION_MAJOR 0
#define MINIMALSGD_VERSION_MINOR 1
#define MINIMALSGD_VERSION_PATCH 0
#define MINIMALSGD_VERSION_STRING "0.1.0"
