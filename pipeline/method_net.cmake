# pipeline/method_net.cmake — the learned methods as worker plug-ins (pipeline/method_net.h):
# sn_net_method ("net": pipeline/method_net.c — bundle cache, label mapping, inference on the
# job's device, post-processing with the atlas code's atlas_postprocess) and, when the atlas
# method is built, "both" (pipeline/method_both.c) in the same library. This file sorts after
# method.cmake and method_atlas.cmake, so sn_method and sn_atlas_segment exist here when they are
# built; sn_volume (headers only here) comes from a fragment sorted after this one.
if(TARGET sn_method AND TARGET sn_atlas AND TARGET sn_nn)
  set(_net_src ${CMAKE_CURRENT_LIST_DIR}/method_net.c)
  if(TARGET sn_atlas_segment)
    list(APPEND _net_src ${CMAKE_CURRENT_LIST_DIR}/method_both.c)
  endif()
  add_library(sn_net_method STATIC ${_net_src})
  target_include_directories(sn_net_method PUBLIC ${PROJECT_SOURCE_DIR})
  target_link_libraries(sn_net_method PUBLIC sn_method sn_nn sn_atlas sn_dicomwrite sn_config sn_common Threads::Threads)
  # method.c calls pipeline_net_method_register() / pipeline_both_method_register() under these.
  target_compile_definitions(sn_method PRIVATE SEGNODE_HAVE_NET_METHOD=1)
  if(TARGET sn_atlas_segment)
    target_link_libraries(sn_net_method PUBLIC sn_atlas_segment)
    target_compile_definitions(sn_method PRIVATE SEGNODE_HAVE_BOTH_METHOD=1)
  endif()
  target_link_libraries(sn_method PUBLIC sn_net_method)
endif()
