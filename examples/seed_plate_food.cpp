// Line-by-line port of examples/seed/plate_food.py: a producer and a consumer generator hand a list
// (a plate, with or without food) back and forth through send() and `rc = yield tx`, each sleeping
// one second per step. The sleeps block the thread on purpose: that is what the Python program
// does, and the point of the example (a generator is not a task; nothing else runs meanwhile).
// Its stdout is byte-identical to Python's (examples/seed/plate_food.expected; a CTest test
// compares them). Takes about 10 s.
//
// The Python generator maps onto asyncio::Generator<Yield, Send, Return> as typing.Generator would
// type it: the consumer yields list, is sent list, returns None. Python passes one list object back
// and forth (tx and rc alias it); here each side holds its own copy, which this program cannot tell
// apart: nobody reads a list after handing it over. Each Python line is quoted, with its
// indentation, next to or just above the C++ that ports it.
#include <asyncio/exceptions.hpp>
#include <asyncio/generator.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <optional>
#include <string>
#include <thread>
#include <vector>

using asyncio::Generator;

namespace py {

using List = std::vector<std::string>;  // a Python list of str

// repr(s) of a str, as Python writes it: single quotes unless s contains ' and no ", backslash
// escapes for the quote, backslash and control characters; other characters as they are.
std::string repr(const std::string& s) {
    const char quote =
        s.find('\'') != std::string::npos && s.find('"') == std::string::npos ? '"' : '\'';
    std::string out(1, quote);
    for (const char ch : s) {
        const auto c = static_cast<unsigned char>(ch);
        if (c == quote || c == '\\') {
            out += '\\';
            out += ch;
        } else if (c == '\n') {
            out += "\\n";
        } else if (c == '\r') {
            out += "\\r";
        } else if (c == '\t') {
            out += "\\t";
        } else if (c < 0x20 || c == 0x7f) {
            char hex[5];
            std::snprintf(hex, sizeof hex, "\\x%02x", c);
            out += hex;
        } else {
            out += ch;
        }
    }
    out += quote;
    return out;
}

// str(list) / '%s' % list: ['plate', 'food'].
std::string str(const List& list) {
    std::string out = "[";
    for (std::size_t i = 0; i < list.size(); ++i) {
        if (i > 0) out += ", ";
        out += repr(list[i]);
    }
    out += "]";
    return out;
}

// str() of a value that may be None.
std::string str(const std::optional<List>& list) {
    return list ? str(*list) : "None";
}

// list.remove(x): removes the first item equal to x; ValueError if there is none.
void remove(List& list, const std::string& x) {
    const auto it = std::find(list.begin(), list.end(), x);
    if (it == list.end()) throw asyncio::ValueError("list.remove(x): x not in list");
    list.erase(it);
}

// time.sleep(seconds): blocks the calling thread.
void sleep(int seconds) {
    std::this_thread::sleep_for(std::chrono::seconds(seconds));
}

}  // namespace py

// from time import sleep             (py::sleep above)

Generator<py::List, py::List> consumer() {  // def consumer():
    py::List tx = {};                       //     tx = []
    while (true) {                          //     while True:
        // rc is std::nullopt when the consumer is resumed by next(), which is Python's send(None).
        std::optional<py::List> rc = co_yield tx;  //         rc = yield tx
        //         print('[CONSUMER] I have reviced %s...' % rc)
        std::cout << "[CONSUMER] I have reviced " << py::str(rc) << "...\n";
        if (rc == std::nullopt) {  //         if rc == None:
            continue;              //             continue
        }
        py::remove(*rc, "food");     //         rc.remove('food')
        std::cout << "Eating...\n";  //         print('Eating...')
        py::sleep(1);                //         sleep(1)
        tx = *rc;                    //         tx = rc
        //         print('[CONSUMER] I have eaten the food and sent back %s...' % tx)
        std::cout << "[CONSUMER] I have eaten the food and sent back " << py::str(tx) << "...\n";
    }
}

void producer(Generator<py::List, py::List>& c) {  // def producer(c):
    c.next();                                      //     c.send(None)
    py::List tx = {"plate"};                       //     tx = ['plate']
    int n = 0;                                     //     n = 0
    while (n < 5) {                                //     while n < 5:
        n = n + 1;                                 //         n = n + 1
        tx.push_back("food");                      //         tx.append('food')
        std::cout << "Producing...\n";             //         print('Producing...')
        py::sleep(1);                              //         sleep(1)
        //         print('[PRODUCER] I am sending %s to comsumer...' % tx)
        std::cout << "[PRODUCER] I am sending " << py::str(tx) << " to comsumer...\n";
        // (send() returns a list; the std::optional keeps Python's None test, which never passes.)
        std::optional<py::List> rc = c.send(tx);  //         rc = c.send(tx)
        if (rc == std::nullopt) {                 //         if rc == None:
            continue;                             //             continue
        }
        //         print('[PRODUCER] I have recived %s' % rc)
        std::cout << "[PRODUCER] I have recived " << py::str(rc) << "\n";
        tx = *rc;  //         tx = rc
    }
    c.close();  //     c.close()
}

int main() {
    Generator<py::List, py::List> c = consumer();  // c = consumer()
    producer(c);                                   // producer(c)
}
