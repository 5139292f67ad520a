# Runs trace_test's environment-variable test with ASYNCIO_TRACE=OUT, then has python3 load the
# file with its json module (an independent parser) and check the events the test checks in C++.
file(REMOVE ${OUT})
execute_process(COMMAND ${CMAKE_COMMAND} -E env ASYNCIO_TRACE=${OUT}
                        ${EXE} --gtest_filter=Trace.ScenarioTracedThroughTheEnvironment
                RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "trace_test failed: ${rc}")
endif()
execute_process(COMMAND ${PYTHON} -c [=[
import json, sys
d = json.load(open(sys.argv[1]))
ev = d["traceEvents"]
assert isinstance(ev, list) and ev, "no events"
for e in ev:
    assert e["ph"] in "XBEisfbeM", e
    assert isinstance(e["ts"], (int, float)) and isinstance(e["tid"], int), e
    if e["ph"] == "X":
        assert e["dur"] >= 0, e
names = {e["args"]["name"] for e in ev if e["ph"] == "M" and e["name"] == "thread_name"}
assert "event loop" in names, names
done = {e["args"]["outcome"] for e in ev if e["name"] == "done"}
assert done == {"result", "exception", "cancelled"}, done
assert any(e["name"] == "recv done" and e["args"]["bytes"] == 4 for e in ev)
assert any(e["name"] == "timer fired" for e in ev)
print(len(ev), "events")
]=] ${OUT} RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "python3 rejected ${OUT}")
endif()
file(REMOVE ${OUT})
