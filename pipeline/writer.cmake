# pipeline/writer.cmake — sn_dicomwrite: DICOM image and SEG writers, the SEG reader (DCMTK behind
# C headers), the label code table loader and the NIfTI label reader (plain C).
find_package(ZLIB REQUIRED)
add_library(sn_dicomwrite STATIC
  ${CMAKE_CURRENT_LIST_DIR}/labels.c
  ${CMAKE_CURRENT_LIST_DIR}/dcmwrite.cc
  ${CMAKE_CURRENT_LIST_DIR}/segwrite.cc
  ${CMAKE_CURRENT_LIST_DIR}/segread.cc
  ${CMAKE_CURRENT_LIST_DIR}/niftiread.c)
target_include_directories(sn_dicomwrite PUBLIC ${PROJECT_SOURCE_DIR})
target_link_libraries(sn_dicomwrite PUBLIC sn_common m
  PRIVATE DCMTK::dcmseg DCMTK::dcmiod DCMTK::dcmfg DCMTK::dcmdata DCMTK::ofstd DCMTK::oflog ZLIB::ZLIB)
