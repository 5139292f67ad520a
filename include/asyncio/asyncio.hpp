// The umbrella header: everything public.
#pragma once

#include "asyncio/clock.hpp"
#include "asyncio/coroutine.hpp"
#include "asyncio/event.hpp"
#include "asyncio/event_loop.hpp"
#include "asyncio/exceptions.hpp"
#include "asyncio/gather.hpp"
#include "asyncio/generator.hpp"
#include "asyncio/run.hpp"
#include "asyncio/sleep.hpp"
#include "asyncio/task.hpp"
#include "asyncio/task_group.hpp"
#include "asyncio/timeout.hpp"
#include "asyncio/shield.hpp"
#include "asyncio/wait.hpp"
