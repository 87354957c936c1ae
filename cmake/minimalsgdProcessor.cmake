# minimalsgd_target_processor(<out-var>): the processor the compiler targets, normalized to
# x86_64, aarch64, or the lower-cased name CMake reports (e.g. ppc64le, riscv64, i686).
#
# Sources, in order: a single macOS architecture in CMAKE_OSX_ARCHITECTURES (several, as in
# universal2, give "multiple": no processor-specific kernel can serve them all); MSVC's own
# CMAKE_CXX_COMPILER_ARCHITECTURE_ID (the Visual Studio generator keeps the host's processor in
# CMAKE_SYSTEM_PROCESSOR when building for ARM64); CMAKE_SYSTEM_PROCESSOR (the toolchain file's
# in a cross build, else the host's).
function(minimalsgd_target_processor out)
  set(p "${CMAKE_SYSTEM_PROCESSOR}")
  if(APPLE AND CMAKE_OSX_ARCHITECTURES)
    list(LENGTH CMAKE_OSX_ARCHITECTURES n)
    if(n EQUAL 1)
      set(p "${CMAKE_OSX_ARCHITECTURES}")
    else()
      set(p "multiple")
    endif()
  elseif(MSVC AND CMAKE_CXX_COMPILER_ARCHITECTURE_ID)
    set(p "${CMAKE_CXX_COMPILER_ARCHITECTURE_ID}")
  endif()
  string(TOLOWER "${p}" p)
  if(p MATCHES "^(x86_64|amd64|x64|em64t)$")
    set(p "x86_64")
  elseif(p MATCHES "^(aarch64|arm64|armv8.*64)$")
    set(p "aarch64")
  endif()
  set(${out} "${p}" PARENT_SCOPE)
endfunction()
