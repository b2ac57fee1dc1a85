# pipeline/writer.cmake — sn_dicomwrite: DICOM image and SEG writers (DCMTK behind C headers)
# plus the label code table loader (plain C).
add_library(sn_dicomwrite STATIC
  ${CMAKE_CURRENT_LIST_DIR}/labels.c
  ${CMAKE_CURRENT_LIST_DIR}/dcmwrite.cc
  ${CMAKE_CURRENT_LIST_DIR}/segwrite.cc)
target_include_directories(sn_dicomwrite PUBLIC ${PROJECT_SOURCE_DIR})
target_link_libraries(sn_dicomwrite PUBLIC sn_common m
  PRIVATE DCMTK::dcmseg DCMTK::dcmiod DCMTK::dcmfg DCMTK::dcmdata DCMTK::ofstd DCMTK::oflog)
