// The program of Python 3.14's `python -m asyncio pstree` documentation: two albums, each a
// TaskGroup playing two tracks, every task named. Start it with ASYNCIO_INSPECT=1 and look at it
// from another shell:
//
//   $ ASYNCIO_INSPECT=1 ./inspect_albums 60 &
//   $ asyncio-inspect pstree $!
//
// usage: inspect_albums [SECONDS]   (how long a track plays; 5 by default, as in Python's)
#include <asyncio/asyncio.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

namespace {

std::chrono::seconds g_track_length{5};

asyncio::Coroutine<> play_track(std::string track) {
    co_await asyncio::sleep(g_track_length);
    std::printf("Finished: %s\n", track.c_str());
}

asyncio::Coroutine<> play_album(std::string name, std::vector<std::string> tracks) {
    (void)name;
    asyncio::TaskGroup tg;
    for (const std::string& track : tracks) tg.create_task(play_track(track), track);
    co_await tg.wait();
}

asyncio::Coroutine<> main_() {
    asyncio::TaskGroup tg;
    tg.create_task(play_album("Sundowning", {"TNDNBTG", "Levitate"}), "Sundowning");
    tg.create_task(play_album("TMBTE", {"DYWTYLM", "Aqua Regia"}), "TMBTE");
    co_await tg.wait();
}

}  // namespace

int main(int argc, char** argv) {
    if (argc > 1) g_track_length = std::chrono::seconds(std::atoi(argv[1]));
    asyncio::run(main_());
}
