// A reader of artdaq-binary files (artdaq's BinaryFileOutput layout) written
// in this project from the published facts of artdaq's RawFragmentHeader v2
// and artdaq-core-demo's ToyFragment, as a C++ user of artdaq would read our
// files: bitfield structs laid out by GCC on x86-64, no artdaq code.
//
// Usage: artdaq_binary_reader BOARDREADERS FIRST_SEQ LAST_SEQ FILE...
//
// Walks every file fragment by fragment (word_count x 8 bytes each, back to
// back, no file header) and checks: every fragment has header version 2 and
// its word_count steps exactly to the next fragment (the last one ends at the
// end of the file); TOY1 fragments have type 2 and num_adc_bits 12, TOY2 type
// 3 and 14, and no other type appears; the metadata's board serial number is
// the fragment id; event_size fits the payload; every sample fits its ADC
// width (fastVerify); the trigger number is the sequence id's low 32 bits;
// every event (consecutive fragments of one sequence id) has exactly one
// fragment per boardreader; the sequence ids over all files are exactly
// FIRST_SEQ..=LAST_SEQ, each once.
//
// Prints one line of counts and exits 0, or prints FAIL lines and exits 1.

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <set>
#include <string>
#include <vector>

namespace {

// artdaq RawFragmentHeader, version 2: four 64-bit words.
struct RawFragmentHeaderV2 {
  uint64_t word_count : 32;
  uint64_t version : 16;
  uint64_t type : 8;
  uint64_t metadata_word_count : 8;

  uint64_t sequence_id : 48;
  uint64_t fragment_id : 16;

  uint64_t timestamp : 64;

  uint64_t valid : 1;
  uint64_t complete : 1;
  uint64_t atime_ns : 30;
  uint64_t atime_s : 32;
};
static_assert(sizeof(RawFragmentHeaderV2) == 32, "header v2 is 4 words");

// artdaq-core-demo ToyFragment::Metadata: one 64-bit word.
struct ToyMetadata {
  uint64_t board_serial_number : 16;
  uint64_t num_adc_bits : 8;
  uint64_t unused : 40;
};
static_assert(sizeof(ToyMetadata) == 8, "toy metadata is 1 word");

// artdaq-core-demo ToyFragment::Header: two 32-bit words.
struct ToyHeader {
  uint32_t event_size : 28;
  uint32_t distribution_type : 4;
  uint32_t trigger_number : 32;
};
static_assert(sizeof(ToyHeader) == 8, "toy header is 2 32-bit words");

const uint8_t kToy1 = 2;
const uint8_t kToy2 = 3;

int failures = 0;

void fail(const std::string& what) {
  if (failures < 20) std::fprintf(stderr, "FAIL: %s\n", what.c_str());
  ++failures;
}

std::string at(const std::string& file, size_t offset) {
  return file + " @" + std::to_string(offset) + ": ";
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 5) {
    std::fprintf(stderr, "usage: %s BOARDREADERS FIRST_SEQ LAST_SEQ FILE...\n", argv[0]);
    return 2;
  }
  const uint64_t boardreaders = std::strtoull(argv[1], nullptr, 10);
  const uint64_t first_seq = std::strtoull(argv[2], nullptr, 10);
  const uint64_t last_seq = std::strtoull(argv[3], nullptr, 10);

  uint64_t fragments = 0, events = 0, toy1 = 0, toy2 = 0, samples = 0;
  std::multiset<uint64_t> seen;

  for (int a = 4; a < argc; ++a) {
    const std::string file = argv[a];
    std::ifstream in(file, std::ios::binary);
    if (!in) {
      fail(file + ": cannot open");
      continue;
    }
    const std::vector<char> bytes((std::istreambuf_iterator<char>(in)),
                                  std::istreambuf_iterator<char>());
    // The fragments of the event being gathered.
    std::vector<RawFragmentHeaderV2> event;
    auto close_event = [&](const std::string& where) {
      if (event.empty()) return;
      ++events;
      const uint64_t seq = event.front().sequence_id;
      seen.insert(seq);
      std::set<uint64_t> ids;
      for (const auto& h : event) ids.insert(h.fragment_id);
      if (event.size() != boardreaders || ids.size() != boardreaders ||
          *ids.rbegin() != boardreaders - 1) {
        fail(where + "event " + std::to_string(seq) + " has " + std::to_string(event.size()) +
             " fragments (" + std::to_string(ids.size()) + " distinct ids), expected one from each of " +
             std::to_string(boardreaders) + " boardreaders");
      }
      event.clear();
    };

    size_t offset = 0;
    while (offset < bytes.size()) {
      const std::string where = at(file, offset);
      if (bytes.size() - offset < sizeof(RawFragmentHeaderV2)) {
        fail(where + "file ends inside a header");
        break;
      }
      RawFragmentHeaderV2 h;
      std::memcpy(&h, bytes.data() + offset, sizeof h);
      if (h.version != 2) {
        fail(where + "header version " + std::to_string(h.version) + ", expected 2");
        break;
      }
      const size_t size = static_cast<size_t>(h.word_count) * 8;
      if (h.word_count < 4u + h.metadata_word_count || size > bytes.size() - offset) {
        fail(where + "word_count " + std::to_string(h.word_count) + " does not fit");
        break;
      }
      ++fragments;
      if (!event.empty() && event.front().sequence_id != h.sequence_id) close_event(where);
      event.push_back(h);

      const char* meta = bytes.data() + offset + sizeof h;
      const char* payload = meta + 8 * h.metadata_word_count;
      const size_t payload_bytes = size - sizeof h - 8 * h.metadata_word_count;
      unsigned expected_bits = 0;
      if (h.type == kToy1) {
        expected_bits = 12;
        ++toy1;
      } else if (h.type == kToy2) {
        expected_bits = 14;
        ++toy2;
      } else {
        fail(where + "fragment type " + std::to_string(h.type) + " is neither TOY1 (2) nor TOY2 (3)");
      }
      if (expected_bits != 0) {
        ToyMetadata m;
        ToyHeader th;
        if (h.metadata_word_count != 1 || payload_bytes < sizeof th) {
          fail(where + "toy fragment without one metadata word and a toy header");
        } else {
          std::memcpy(&m, meta, sizeof m);
          std::memcpy(&th, payload, sizeof th);
          if (m.num_adc_bits != expected_bits)
            fail(where + "type " + std::to_string(h.type) + " with num_adc_bits " +
                 std::to_string(m.num_adc_bits));
          if (m.board_serial_number != h.fragment_id)
            fail(where + "board_serial_number " + std::to_string(m.board_serial_number) +
                 " is not the fragment id " + std::to_string(h.fragment_id));
          if (th.trigger_number != static_cast<uint32_t>(h.sequence_id))
            fail(where + "trigger_number " + std::to_string(th.trigger_number));
          const size_t event_bytes = static_cast<size_t>(th.event_size) * 4;
          if (event_bytes < sizeof th || event_bytes > payload_bytes) {
            fail(where + "event_size " + std::to_string(th.event_size) + " does not fit the payload");
          } else {
            const size_t n = (event_bytes - sizeof th) / 2;
            for (size_t i = 0; i < n; ++i) {
              uint16_t v;
              std::memcpy(&v, payload + sizeof th + 2 * i, 2);
              if ((v >> m.num_adc_bits) != 0) {
                fail(where + "sample " + std::to_string(i) + " = " + std::to_string(v) +
                     " does not fit " + std::to_string(m.num_adc_bits) + " bits");
                break;
              }
            }
            samples += n;
          }
        }
      }
      offset += size;
    }
    close_event(at(file, offset));
  }

  for (uint64_t s = first_seq; s <= last_seq; ++s) {
    const size_t n = seen.count(s);
    if (n != 1) fail("sequence id " + std::to_string(s) + " seen " + std::to_string(n) + " times");
  }
  for (uint64_t s : seen) {
    if (s < first_seq || s > last_seq) fail("sequence id " + std::to_string(s) + " outside the run");
  }

  std::printf("fragments %llu events %llu toy1 %llu toy2 %llu samples %llu\n",
              static_cast<unsigned long long>(fragments), static_cast<unsigned long long>(events),
              static_cast<unsigned long long>(toy1), static_cast<unsigned long long>(toy2),
              static_cast<unsigned long long>(samples));
  if (failures > 0) {
    std::fprintf(stderr, "%d failures\n", failures);
    return 1;
  }
  return 0;
}
