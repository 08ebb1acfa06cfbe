# Fails when a source file includes a header its layer may not see. Run as
#   cmake -DROOT=<repo> -P cmake/check_layering.cmake
# (every build runs it; tests/deploy/layering_test.sh checks that it catches a bad include).
#
# The layers: proto <- common <- client <- worker, and common <- server. server/ and worker/
# never include each other, the server never includes the client, and common/ sees neither
# gRPC nor generated code, except common/rpc/, the one place wire and domain types meet.
if(NOT ROOT)
  message(FATAL_ERROR "check_layering: pass -DROOT=<repository root>")
endif()

function(check_folder folder forbidden why)
  file(GLOB_RECURSE files "${ROOT}/${folder}/*.h" "${ROOT}/${folder}/*.cc" "${ROOT}/${folder}/*.cu")
  foreach(f IN LISTS files)
    file(STRINGS "${f}" lines REGEX "^[ \t]*#[ \t]*include[ \t]*[\"<]")
    foreach(line IN LISTS lines)
      if(line MATCHES "#[ \t]*include[ \t]*[\"<]([^\">]+)[\">]")
        set(inc "${CMAKE_MATCH_1}")
        string(FIND "${inc}" "${forbidden}" at)
        if(at EQUAL 0)
          file(RELATIVE_PATH rel "${ROOT}" "${f}")
          set_property(GLOBAL APPEND PROPERTY regtopk_layering_violations
                       "${rel} includes \"${inc}\": ${why}")
        endif()
      endif()
    endforeach()
  endforeach()
endfunction()

# folder | forbidden include prefix | why
set(rules
  "common|server/|common/ is below the server"
  "common|worker/|common/ is below the worker"
  "common|client/|common/ is below the client"
  "client|server/|the client knows only the wire contract"
  "client|worker/|the client is below the worker"
  "server|worker/|server/ and worker/ never include each other"
  "server|client/|the server does not use the client"
  "worker|server/|server/ and worker/ never include each other"
  "python|server/|the Python API wraps the worker's code, not the server's"
  "python|torch/|the Python API links no LibTorch (it works with Debian's python3-torch)")
foreach(rule IN LISTS rules)
  string(REPLACE "|" ";" parts "${rule}")
  list(GET parts 0 folder)
  list(GET parts 1 forbidden)
  list(GET parts 2 why)
  check_folder(${folder} ${forbidden} "${why}")
endforeach()

# common/ outside common/rpc/ sees no gRPC and no generated code.
file(GLOB common_dirs LIST_DIRECTORIES true "${ROOT}/common/*")
foreach(dir IN LISTS common_dirs)
  if(IS_DIRECTORY "${dir}" AND NOT dir MATCHES "/rpc$")
    file(RELATIVE_PATH rel_dir "${ROOT}" "${dir}")
    check_folder(${rel_dir} grpcpp/ "common/ has no gRPC code outside common/rpc/")
    check_folder(${rel_dir} regtopk/v1/ "common/ sees wire types only in common/rpc/")
  endif()
endforeach()

get_property(found GLOBAL PROPERTY regtopk_layering_violations)
if(found)
  list(REMOVE_DUPLICATES found)
  foreach(v IN LISTS found)
    message(SEND_ERROR "layering: ${v}")
  endforeach()
  message(FATAL_ERROR "layering check failed (see cmake/check_layering.cmake)")
endif()
