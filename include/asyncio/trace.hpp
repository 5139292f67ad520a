// Traces you can look at: a loop's tasks, callbacks, timers and I/O operations, written as Chrome
// trace-event JSON, which ui.perfetto.dev and chrome://tracing open.
//
//   ASYNCIO_TRACE=/tmp/app.json ./app                     // every loop made while it is set
//   asyncio::run(main(), {.trace_file = "/tmp/app.json"}); // one run (RunOptions::trace_file)
//   loop.set_trace_file("/tmp/app.json");                 // one loop (EventLoop, not running)
//
// The environment variable is read once, when a loop is made. RunOptions::trace_file overrides it
// ("" turns tracing off for that run).
//
// What the file holds: {"traceEvents":[...],"displayTimeUnit":"ms"}, "ts" in microseconds of the
// monotonic clock (one time base for every loop of the process; the loop's own clock, virtual or
// not, is not used), "pid" the process id. One track (tid) per task, numbered 2, 3, ... in the
// order the tasks were made and named by "M" thread_name events: "<coroutine function> #<tid>",
// then "<task name> (<coroutine function>)" once the task has a name. Track 1 ("event loop") holds
// the loop's own callbacks. Events (cat / ph / name):
//   task   i create     on the new task's track (args: coro, parent track), with an s/f "spawn"
//                       arrow from the track that made it to its first step
//   task   X step       each resumption of the task until it suspends or finishes
//   task   i suspend    at the end of a step that suspended; args.await is the await site
//                       ("sleep()", "sock_recv", "Event::wait()", "Task", "gather()", ...; "?"
//                       where none is known), args.coro the task's coroutine function, args.at
//                       the co_await it waits at: "fn() at file:line" (absent where not known)
//   await  X await <site>  the time between that suspension and the next step (args.at as above)
//   task   i done       args.outcome = result | exception | cancelled (args.exception: type and
//                       message), args.steps
//   loop   X callback   a call_soon / call_later / call_at / call_soon_threadsafe callback (track 1)
//   timer  i timer scheduled | timer fired | timer cancelled   args.timer (an id), delay_us;
//                       fired on track 1; the others where they happen (call_later, sleep,
//                       timeouts; a Handle::cancel() of a call_later timer is not recorded)
//   io     i <kind> submit | <kind> done | <kind> cancelled   kind: recv, send, accept, connect,
//                       recvfrom, sendto, read, write, readable, writable; args.fd, len, op (an
//                       id), and bytes (accept: new_fd; connect, readable, writable: result) or
//                       errno; on the submitting task's track, and b/e async slices "<kind> fd N"
//                       spanning each operation
// Files (native file I/O) and the loop's internal wake-ups are not traced.
//
// Promises:
//   - Off (the default), tracing costs each hook one test of a pointer that is null: the
//     thread-local tracer in a task's step and at a suspension, the loop's elsewhere.
//   - The file is valid JSON from the moment it is opened and after every write: events are
//     buffered and written in chunks of about 256 KiB, each write putting the closing "]}" back
//     at the end. It is completed when the loop closes (EventLoop::close(), the end of
//     asyncio::run, a Runner's close, the loop's destructor: also when the program leaves by an
//     exception), and at exit() for a loop never closed; an abort loses only what was buffered.
//     EventLoop::flush_trace() writes the buffer at once.
//   - Several loops: one file per loop. The first loop of the process that traces to FILE writes
//     FILE, the next FILE.2, FILE.3, ... (EventLoop::trace_file() says which). Loops on several
//     threads never share a file, so tracing takes no lock.
//   - Tracing changes no behaviour of the program (task names are read, never assigned).
//
// Open a trace: ui.perfetto.dev -> "Open trace file", or chrome://tracing -> "Load".
#pragma once

#include "asyncio/event_loop.hpp"
#include "asyncio/run.hpp"
