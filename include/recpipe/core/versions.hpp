// SPDX-License-Identifier: Apache-2.0
// recpipe core: versioned slots that a trainer publishes into while pipelines serve from them.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <type_traits>
#include <typeindex>
#include <typeinfo>
#include <utility>
#include <vector>

#include <recpipe/core/errors.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN

class version_registry;
template <class T>
class slot;

namespace detail {

//! One published state of a registry: an immutable object per slot. A run holds the generation it
//! pinned (a shared_ptr), so every object of that generation stays alive until the run ends.
struct generation {
  std::uint64_t version = 0;                          //!< the registry's version (one per commit)
  std::vector<std::shared_ptr<const void>> objects;   //!< by slot index
  std::vector<std::uint64_t> published_in;            //!< the version each slot's object was published in
  std::shared_ptr<std::atomic<std::size_t>> live;     //!< counts generations alive (tests, stats)

  generation() = default;
  generation(const generation&) = delete;
  generation& operator=(const generation&) = delete;
  ~generation() {
    if (live) live->fetch_sub(1, std::memory_order_relaxed);
  }
};

struct slot_info {
  std::string name;
  std::type_index type;
  //! Throws recpipe::error when `next` may not replace `current` (shapes differ).
  std::function<void(const void* current, const void* next)> check;
};

//! The state a registry and all its slots share, so that slots (held by pipelines' stages) keep it
//! alive after the registry object itself is gone.
struct registry_state {
  std::mutex publish_mutex;  // serialises publishers; readers never take it
  std::vector<slot_info> slots;
  std::shared_ptr<std::atomic<std::size_t>> live = std::make_shared<std::atomic<std::size_t>>(0);
  std::atomic<std::uint64_t> publications{0};

#if defined(__cpp_lib_atomic_shared_ptr)
  std::atomic<std::shared_ptr<const generation>> current;
  std::shared_ptr<const generation> load() const { return current.load(std::memory_order_acquire); }
  void store(std::shared_ptr<const generation> g) { current.store(std::move(g), std::memory_order_release); }
#else
  // Without std::atomic<std::shared_ptr>: a mutex held only for the pointer copy (nanoseconds).
  mutable std::mutex current_mutex;
  std::shared_ptr<const generation> current;
  std::shared_ptr<const generation> load() const {
    std::lock_guard lock(current_mutex);
    return current;
  }
  void store(std::shared_ptr<const generation> g) {
    std::lock_guard lock(current_mutex);
    current.swap(g);
  }
#endif
};

//! @brief The generations one pipeline run has pinned: at most one per registry, taken when the run
//! starts and released when it ends. A thread runs one (outermost) run at a time, so the pins of
//! the running run are reachable through a thread-local pointer; nested stage calls reuse them.
class run_pins {
 public:
  //! The generation this run uses for `state`, pinning the registry's current one on first use.
  const generation& pin(const registry_state& state) {
    for (const auto& [s, g] : pins_)
      if (s == &state) return *g;
    pins_.emplace_back(&state, state.load());
    return *pins_.back().second;
  }
  //! The pinned generation of `state`, or nullptr.
  const generation* find(const registry_state& state) const {
    for (const auto& [s, g] : pins_)
      if (s == &state) return g.get();
    return nullptr;
  }
  std::size_t size() const { return pins_.size(); }

 private:
  std::vector<std::pair<const registry_state*, std::shared_ptr<const generation>>> pins_;
};

inline thread_local run_pins* current_run_pins = nullptr;

//! Makes a run's pins current on this thread for its lifetime; an inner scope (a stage run inside a
//! pipeline run) reuses the outer pins so the whole run sees one generation per registry.
class run_scope {
 public:
  run_scope() : outer_(current_run_pins) {
    if (!outer_) current_run_pins = &own_;
  }
  ~run_scope() {
    if (!outer_) current_run_pins = nullptr;
  }
  run_scope(const run_scope&) = delete;
  run_scope& operator=(const run_scope&) = delete;
  run_pins& pins() { return outer_ ? *outer_ : own_; }

 private:
  run_pins* outer_;
  run_pins own_;
};

template <class T>
concept has_config_json = requires(const T& t) { t.config().to_json(); };
template <class T>
concept has_dim = requires(const T& t) {
  { t.dim() } -> std::convertible_to<std::size_t>;
};

//! The default shape check of a slot: models with a config() must keep it (dims, tables, layers);
//! objects with a dim() must keep their dim. Anything else may change freely.
template <class T>
void default_replace_check(std::string_view slot_name, const T& current, const T& next) {
  if constexpr (has_config_json<T>) {
    const auto a = current.config().to_json(), b = next.config().to_json();
    if (a != b)
      detail::fail("version_registry: slot '", slot_name, "': the new version's config ", b.dump(),
                   " differs from the serving version's ", a.dump(), "; the slot keeps its current version");
  } else if constexpr (has_dim<T>) {
    if (current.dim() != next.dim())
      detail::fail("version_registry: slot '", slot_name, "': the new version has dim ", next.dim(),
                   " but the serving version has dim ", current.dim(), "; the slot keeps its current version");
  }
}

}  // namespace detail

//! @brief A handle to one versioned object of a version_registry: what a stage holds instead of a
//! fixed model, table, store or index.
//!
//! Copying a slot copies the handle (it shares the registry's state, so a pipeline holding slots
//! keeps the registry alive). `get()` inside a pipeline run returns the object of the generation
//! that run pinned; `current()` anywhere returns the latest published object.
template <class T>
class slot {
 public:
  using value_type = T;

  //! The latest published object (a trainer reading the serving version, a test).
  std::shared_ptr<const T> current() const {
    return std::static_pointer_cast<const T>(state_->load()->objects[index_]);
  }
  //! @brief The object this pipeline run pinned (pinning the latest one if the run has not yet).
  //! @throws recpipe::error when called outside a pipeline or stage run (use current() there).
  const T& get() const {
    detail::run_pins* pins = detail::current_run_pins;
    if (pins == nullptr)
      detail::fail("slot '", name(), "': get() outside a pipeline run; use current() to read the latest version");
    const detail::generation& g = pins->pin(*state_);
    return *static_cast<const T*>(g.objects[index_].get());
  }
  //! The registry version whose object get() returns in this run (0 outside a run).
  std::uint64_t pinned_version() const {
    const detail::run_pins* pins = detail::current_run_pins;
    const detail::generation* g = pins ? pins->find(*state_) : nullptr;
    return g ? g->published_in[index_] : 0;
  }
  //! Pins this slot's registry in `pins` (a pipeline does this for every stage when a run starts).
  void pin(detail::run_pins& pins) const { pins.pin(*state_); }
  //! The slot's name (given to version_registry::add).
  const std::string& name() const { return state_->slots[index_].name; }
  std::size_t index() const { return index_; }

 private:
  friend class version_registry;
  slot(std::shared_ptr<detail::registry_state> state, std::size_t index) : state_(std::move(state)), index_(index) {}
  std::shared_ptr<detail::registry_state> state_;
  std::size_t index_;
};

template <class T>
inline constexpr bool is_slot_v = false;
template <class T>
inline constexpr bool is_slot_v<slot<T>> = true;

//! @brief Immutable versions of the models, tables, stores and indexes a pipeline serves from,
//! published by a trainer while requests run.
//!
//! A registry holds slots; each slot holds one immutable object (`std::shared_ptr<const T>`). A
//! commit replaces the objects of one or more slots at once and makes a new generation, numbered by
//! the registry's version. Stages refer to slots (`score(ranker_slot)`); each pipeline run pins the
//! registry's current generation when it starts and every stage of that run reads that generation,
//! so a run never mixes two versions (the retrieval tower of version 7 with the ranker of version 8)
//! when they were committed together. Runs in flight finish on their generation; the next runs see
//! the new one; a generation is freed when the last run holding it ends.
//!
//! Cost: a run pins with one atomic shared_ptr load per registry; a commit copies the generation's
//! pointer vector (one pointer per slot), never the objects, and readers never wait for it.
//! Publishing a new object costs what making it costs: publish tables as copy-on-write versions
//! (train/versioned_table.hpp) so that a new version shares unchanged rows with the old.
//!
//! Thread safety: any number of threads run pipelines and call slot::get()/current(); commits are
//! serialised by a mutex that readers never take. add() may run while pipelines run.
//!
//! @code
//! recpipe::version_registry versions;
//! auto ranker = versions.add("ranker", std::make_shared<const my_ranker>(initial));
//! auto pipeline = recpipe::retrieve(index, 200) >> recpipe::score(ranker) >> recpipe::top_k(10);
//! // trainer thread, every few minutes:
//! versions.publish(ranker, std::make_shared<const my_ranker>(trained));
//! // or several slots at once, so no run sees one without the other:
//! auto tx = versions.begin();
//! tx.set(ranker, std::make_shared<const my_ranker>(trained));
//! tx.set(tower, std::make_shared<const my_tower>(tower_trained));
//! tx.commit();
//! @endcode
class version_registry {
 public:
  version_registry() : state_(std::make_shared<detail::registry_state>()) {
    state_->slots.reserve(max_slots);
    auto g = std::make_shared<detail::generation>();
    g->live = state_->live;
    state_->live->fetch_add(1, std::memory_order_relaxed);
    state_->store(std::move(g));
  }

  //! @brief Adds a slot holding `initial` (version 0 of that slot) and returns its handle.
  //! `check(current, next)` runs before every publication into the slot and throws to refuse it;
  //! by default a model's config (its shapes) or an object's dim() must not change.
  //! @throws recpipe::error for a null initial object or a name already used.
  template <class T>
  slot<T> add(std::string name, std::shared_ptr<const T> initial,
              std::function<void(const T& current, const T& next)> check = {}) {
    if (!initial) detail::fail("version_registry: add: slot '", name, "' needs an initial object (got null)");
    std::lock_guard lock(state_->publish_mutex);
    for (const auto& s : state_->slots)
      if (s.name == name) detail::fail("version_registry: add: a slot named '", name, "' exists already");
    auto checker = [check = std::move(check), name](const void* a, const void* b) {
      const T& current = *static_cast<const T*>(a);
      const T& next = *static_cast<const T*>(b);
      if (check)
        check(current, next);
      else
        detail::default_replace_check(name, current, next);
    };
    const std::shared_ptr<const detail::generation> old = state_->load();
    // Slots are appended while readers may read the names of older slots: the table is reserved
    // once (max_slots) and never reallocates under them.
    if (state_->slots.size() == max_slots)
      detail::fail("version_registry: add: at most ", state_->slots.capacity(), " slots per registry");
    state_->slots.push_back({std::move(name), std::type_index(typeid(T)), std::move(checker)});
    auto next = copy_generation(*old);
    next->objects.push_back(std::move(initial));
    next->published_in.push_back(next->version);
    state_->store(std::move(next));
    return slot<T>(state_, state_->slots.size() - 1);
  }
  template <class T>
  slot<T> add(std::string name, std::shared_ptr<T> initial, std::function<void(const T&, const T&)> check = {}) {
    return add<T>(std::move(name), std::shared_ptr<const T>(std::move(initial)), std::move(check));
  }

  //! @brief A set of replacements that become visible together (or not at all) at commit().
  class transaction {
   public:
    //! Stages `next` for slot `s` (checked at commit). A second set of the same slot replaces the first.
    template <class T>
    transaction& set(const slot<T>& s, std::shared_ptr<const T> next) {
      if (s.state_ != registry_->state_)
        detail::fail("version_registry: transaction: slot '", s.name(), "' belongs to another registry");
      if (!next) detail::fail("version_registry: transaction: null object for slot '", s.name(), "'");
      for (auto& [index, object] : staged_)
        if (index == s.index()) {
          object = std::move(next);
          return *this;
        }
      staged_.emplace_back(s.index(), std::move(next));
      return *this;
    }
    template <class T>
    transaction& set(const slot<T>& s, std::shared_ptr<T> next) {
      return set(s, std::shared_ptr<const T>(std::move(next)));
    }
    //! @brief Checks every staged object against its slot, then publishes them all in one new
    //! generation and returns its version. On any failed check nothing is published and the
    //! error names the slot; pipelines keep serving the current generation.
    std::uint64_t commit() {
      if (committed_) detail::fail("version_registry: transaction: commit() called twice");
      committed_ = true;
      return registry_->commit(staged_);
    }

   private:
    friend class version_registry;
    explicit transaction(version_registry& r) : registry_(&r) {}
    version_registry* registry_;
    std::vector<std::pair<std::size_t, std::shared_ptr<const void>>> staged_;
    bool committed_ = false;
  };

  //! Starts a transaction (publish several slots together).
  transaction begin() { return transaction(*this); }

  //! Publishes one slot's next object; returns the new registry version. Same checks as commit().
  template <class T>
  std::uint64_t publish(const slot<T>& s, std::shared_ptr<const T> next) {
    return begin().set(s, std::move(next)).commit();
  }
  template <class T>
  std::uint64_t publish(const slot<T>& s, std::shared_ptr<T> next) {
    return publish(s, std::shared_ptr<const T>(std::move(next)));
  }

  //! The version of the latest generation (0 before the first commit; add() does not count).
  std::uint64_t version() const { return state_->load()->version; }
  //! Generations still alive: the current one plus those pinned by runs in flight.
  std::size_t live_generations() const { return state_->live->load(std::memory_order_relaxed); }
  //! Commits so far.
  std::uint64_t publications() const { return state_->publications.load(std::memory_order_relaxed); }
  std::size_t slot_count() const { return state_->load()->objects.size(); }

  //! At most this many slots (the slot table never moves under readers).
  static constexpr std::size_t max_slots = 64;

 private:
  std::shared_ptr<detail::generation> copy_generation(const detail::generation& old) {
    auto next = std::make_shared<detail::generation>();
    next->version = old.version;
    next->objects = old.objects;
    next->published_in = old.published_in;
    next->live = state_->live;
    state_->live->fetch_add(1, std::memory_order_relaxed);
    return next;
  }

  std::uint64_t commit(const std::vector<std::pair<std::size_t, std::shared_ptr<const void>>>& staged) {
    std::lock_guard lock(state_->publish_mutex);
    const std::shared_ptr<const detail::generation> old = state_->load();
    for (const auto& [index, object] : staged) state_->slots[index].check(old->objects[index].get(), object.get());
    auto next = copy_generation(*old);
    next->version = old->version + 1;
    for (const auto& [index, object] : staged) {
      next->objects[index] = object;
      next->published_in[index] = next->version;
    }
    const std::uint64_t version = next->version;
    state_->store(std::move(next));
    state_->publications.fetch_add(1, std::memory_order_relaxed);
    return version;
  }

  std::shared_ptr<detail::registry_state> state_;
};

RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
