# pipeline/method_atlas.cmake — the atlas method over pipeline_volume and the atlas library folder:
# sn_atlas_segment (pipeline/atlas/segment.c; `segnode segment --method atlas` uses it) and, when
# the worker's registry exists, sn_atlas_method (its plug-in, pipeline/atlas/method_atlas.c). The
# registration code itself is sn_atlas (pipeline/atlas/CMakeLists.txt, also in NN_ONLY builds).
# This file sorts after method.cmake, so sn_method exists here when it is built.
# sn_volume and sn_dicomwrite come from fragments sorted after this one: linked by name.
if(TARGET sn_atlas AND EXISTS ${CMAKE_CURRENT_LIST_DIR}/volume.cmake AND EXISTS ${CMAKE_CURRENT_LIST_DIR}/writer.cmake)
  add_library(sn_atlas_segment STATIC ${CMAKE_CURRENT_LIST_DIR}/atlas/segment.c)
  target_include_directories(sn_atlas_segment PUBLIC ${PROJECT_SOURCE_DIR})
  target_link_libraries(sn_atlas_segment PUBLIC sn_atlas sn_volume sn_dicomwrite sn_common)
endif()
if(TARGET sn_atlas_segment AND TARGET sn_method)
  add_library(sn_atlas_method STATIC ${CMAKE_CURRENT_LIST_DIR}/atlas/method_atlas.c)
  target_include_directories(sn_atlas_method PUBLIC ${PROJECT_SOURCE_DIR})
  target_link_libraries(sn_atlas_method PUBLIC sn_atlas_segment sn_method sn_config sn_common)
  # method.c calls pipeline_atlas_method_register() under this definition.
  target_compile_definitions(sn_method PRIVATE SEGNODE_HAVE_ATLAS_METHOD=1)
  target_link_libraries(sn_method PUBLIC sn_atlas_method)
endif()
