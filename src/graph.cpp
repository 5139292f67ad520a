// Call graphs: what a suspended task is doing (its chain of coroutines) and who awaits it.
#include "graph_snapshot.hpp"

#include "asyncio/task.hpp"

namespace asyncio::detail {

std::vector<TaskSnapshot> snapshot_tasks(EventLoop& loop) {
    std::vector<TaskSnapshot> out;
    for (PromiseBase* p = loop.task_list(); p != nullptr; p = p->next_) {
        if (p->has(kDone) || p->has(kAbandoned) || p->has(kFuture)) continue;
        TaskSnapshot s;
        s.id = reinterpret_cast<std::uintptr_t>(p);
        s.name = task_name(p);
        out.push_back(std::move(s));
    }
    return out;
}

}  // namespace asyncio::detail
