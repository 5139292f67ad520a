// The exception types of the library, named as in Python so that an asyncio user knows what each
// means. OS failures are reported as std::system_error carrying errno, never as these.
#pragma once

#include <any>
#include <cstddef>
#include <exception>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace asyncio {

/// The root of the exceptions that are requests to stop rather than errors (Python's
/// BaseException without Exception): CancelledError, GeneratorExit and KeyboardInterrupt (room
/// for SystemExit). They do not derive from std::exception, so that `catch (const
/// std::exception&)` around an await never swallows a cancellation: Python moved CancelledError
/// out of Exception in 3.8 for exactly this. Catch them by name, or with `catch (...)`.
class BaseException {
public:
    virtual ~BaseException() = default;
    virtual const char* what() const noexcept = 0;
};

/// Raised inside a task at the point where it is suspended when Task::cancel() is called, and by
/// Task::result() of a cancelled task. A BaseException, not a std::exception (see above).
class CancelledError : public BaseException {
public:
    CancelledError() = default;
    explicit CancelledError(std::string msg) : msg_(std::move(msg)) {}
    const char* what() const noexcept override { return msg_.empty() ? "CancelledError" : msg_.c_str(); }
    /// The message given to cancel(msg), empty if none.
    const std::string& message() const noexcept { return msg_; }

private:
    std::string msg_;
};

/// An operation was attempted on a Future/Task in the wrong state (result of a pending task,
/// setting the result of a finished future, ...).
class InvalidStateError : public std::logic_error {
public:
    using std::logic_error::logic_error;
};

/// A deadline passed (wait_for, timeout scopes).
class TimeoutError : public std::runtime_error {
public:
    TimeoutError() : std::runtime_error("TimeoutError") {}
    using std::runtime_error::runtime_error;
};

/// Misuse with the wrong kind of value (Python's TypeError), e.g. sending a value to a
/// just-started generator.
class TypeError : public std::logic_error {
public:
    using std::logic_error::logic_error;
};

/// Misuse with a value in the wrong state (Python's ValueError), e.g. resuming a running generator.
class ValueError : public std::logic_error {
public:
    using std::logic_error::logic_error;
};

/// Python's io.UnsupportedOperation: reading a file opened for writing only, or the reverse
/// ("not readable", "not writable"). A ValueError, as in Python.
class UnsupportedOperation : public ValueError {
public:
    using ValueError::ValueError;
};

/// Python's RuntimeError: no running event loop, a generator that ignored GeneratorExit, ...
class RuntimeError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

/// Python's asyncio.SendfileNotAvailableError: sendfile(fallback = false) where the OS call cannot
/// be used (a TLS stream, a file or socket sendfile(2) refuses). A RuntimeError, as in Python.
class SendfileNotAvailableError : public RuntimeError {
public:
    using RuntimeError::RuntimeError;
};

/// Python's RuntimeWarning. Never thrown by the library: it is the exception of a warning given to
/// the loop's exception handler (the default executor not joined within its timeout).
class RuntimeWarning : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

/// Python's ResourceWarning. Never thrown by the library: in debug mode, the exception of the
/// report of a Socket, StreamWriter, Server, Process or EventLoop destroyed without close()
/// ("unclosed <...>", with where it was made).
class ResourceWarning : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

/// Raised by Generator::next()/send() when the generator has finished; value() holds what the
/// generator co_returned (empty for Return = void), as Python's StopIteration.value.
class StopIteration : public std::exception {
public:
    StopIteration() = default;
    explicit StopIteration(std::any value) : value_(std::move(value)) {}
    const char* what() const noexcept override { return "StopIteration"; }
    const std::any& value() const noexcept { return value_; }

private:
    std::any value_;
};

/// Thrown into a generator at its suspension point by close(); a generator may catch it to clean
/// up but must then finish, not yield.
class GeneratorExit : public BaseException {
public:
    const char* what() const noexcept override { return "GeneratorExit"; }
};

/// Ctrl-C: raised by asyncio::run() and Runner::run() when the first SIGINT cancelled the main
/// task and it ended by that cancellation (Python 3.11's asyncio.Runner; see run.hpp). A
/// BaseException, not a std::exception, as in Python: `catch (const std::exception&)` does not
/// swallow it. A program that lets it escape main() terminates (std::terminate, SIGABRT); catch
/// it to exit with a status of your choice (130 is the shell's convention for Ctrl-C).
class KeyboardInterrupt : public BaseException {
public:
    const char* what() const noexcept override { return "KeyboardInterrupt"; }
};

/// Several exceptions at once, as Python's (Base)ExceptionGroup: what a TaskGroup raises when its
/// tasks fail. exceptions() keeps every one, in the order they happened.
class ExceptionGroup : public std::exception {
public:
    ExceptionGroup(std::string message, std::vector<std::exception_ptr> exceptions)
        : message_(std::move(message)), exceptions_(std::move(exceptions)) {
        what_ = message_ + " (" + std::to_string(exceptions_.size()) + " sub-exception" +
                (exceptions_.size() == 1 ? "" : "s") + ")";
    }
    const char* what() const noexcept override { return what_.c_str(); }
    const std::string& message() const noexcept { return message_; }
    const std::vector<std::exception_ptr>& exceptions() const noexcept { return exceptions_; }

private:
    std::string message_;
    std::vector<std::exception_ptr> exceptions_;
    std::string what_;
};

/// Queue::get_nowait() on an empty queue.
class QueueEmpty : public std::runtime_error {
public:
    QueueEmpty() : std::runtime_error("QueueEmpty") {}
    using std::runtime_error::runtime_error;
};

/// Queue::put_nowait() on a full queue.
class QueueFull : public std::runtime_error {
public:
    QueueFull() : std::runtime_error("QueueFull") {}
    using std::runtime_error::runtime_error;
};

/// put/get on a queue that was shut down (Python 3.13).
class QueueShutDown : public std::runtime_error {
public:
    QueueShutDown() : std::runtime_error("QueueShutDown") {}
    using std::runtime_error::runtime_error;
};

/// Barrier::wait() on a barrier that was aborted or broken by a cancelled waiter.
class BrokenBarrierError : public std::runtime_error {
public:
    BrokenBarrierError() : std::runtime_error("BrokenBarrierError") {}
    using std::runtime_error::runtime_error;
};

/// StreamReader::readexactly() (or readuntil()) reached EOF before it had read what it needed, as
/// Python's asyncio.IncompleteReadError (an EOFError). partial() holds the bytes that were read
/// (they are no longer in the reader's buffer); expected() is how many were wanted (nullopt for
/// readuntil, Python's None).
class IncompleteReadError : public std::runtime_error {
public:
    IncompleteReadError(std::string partial, std::optional<std::size_t> expected)
        : std::runtime_error(std::to_string(partial.size()) + " bytes read on a total of " +
                             (expected ? std::to_string(*expected) : std::string("undefined")) +
                             " expected bytes"),
          partial_(std::move(partial)),
          expected_(expected) {}
    const std::string& partial() const noexcept { return partial_; }
    std::optional<std::size_t> expected() const noexcept { return expected_; }

private:
    std::string partial_;
    std::optional<std::size_t> expected_;
};

/// StreamReader::readuntil()/readline() found no separator within the reader's limit, as Python's
/// asyncio.LimitOverrunError. The data stays in the reader's buffer; consumed() is the number of
/// bytes to read (e.g. with read(consumed())) to get past what was searched.
class LimitOverrunError : public std::runtime_error {
public:
    LimitOverrunError(const std::string& message, std::size_t consumed)
        : std::runtime_error(message), consumed_(consumed) {}
    std::size_t consumed() const noexcept { return consumed_; }

private:
    std::size_t consumed_;
};

}  // namespace asyncio
