# pipeline/method.cmake — sn_method: the registry of segmentation methods (method.h), plain C.
add_library(sn_method STATIC ${CMAKE_CURRENT_LIST_DIR}/method.c)
target_include_directories(sn_method PUBLIC ${PROJECT_SOURCE_DIR})
target_link_libraries(sn_method PUBLIC sn_common sn_config Threads::Threads)
