# pipeline/volume.cmake — series -> volume (DCMTK + our OpenJPEG-based JPEG 2000 codec), NIfTI.
add_library(sn_volume STATIC
  ${CMAKE_CURRENT_LIST_DIR}/volume.cc
  ${CMAKE_CURRENT_LIST_DIR}/codec_j2k.cc
  ${CMAKE_CURRENT_LIST_DIR}/geometry.c
  ${CMAKE_CURRENT_LIST_DIR}/nifti.c)
find_package(ZLIB REQUIRED)
target_include_directories(sn_volume PUBLIC ${PROJECT_SOURCE_DIR})
target_link_libraries(sn_volume
  PUBLIC sn_common
  PRIVATE PkgConfig::OPENJP2 ZLIB::ZLIB
          DCMTK::dcmjpls DCMTK::dcmjpeg DCMTK::dcmimgle DCMTK::dcmdata DCMTK::oflog DCMTK::ofstd
          Threads::Threads m)
# The per-voxel loops (Modality LUT, int16 checks) are worth vectorising.
set_source_files_properties(${CMAKE_CURRENT_LIST_DIR}/volume.cc ${CMAKE_CURRENT_LIST_DIR}/nifti.c
  PROPERTIES COMPILE_OPTIONS -O3)
