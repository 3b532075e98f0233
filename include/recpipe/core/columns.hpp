// SPDX-License-Identifier: Apache-2.0
// recpipe: the standard columns that the built-in stages read and write.
#pragma once

#include <cstdint>

#include <recpipe/core/column.hpp>
#include <recpipe/core/types.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN
//! Standard columns. User code adds its own with RECPIPE_COLUMN in its own namespace.
namespace col {
RECPIPE_COLUMN(user_id, per_request, id_type);                 //!< who the request is for
RECPIPE_COLUMN(request_seed, per_request, std::uint64_t);      //!< optional: per-request sampling seed
RECPIPE_COLUMN(history, per_request_list, id_type);            //!< items the user has already seen
RECPIPE_COLUMN(session_items, per_request_list, id_type);      //!< items of the current session, in order
RECPIPE_COLUMN(user_embedding, per_request_vector, float);     //!< a stored user vector
RECPIPE_COLUMN(user_features, per_request_vector, float);      //!< dense user features for a model
RECPIPE_COLUMN(query_vector, per_request_vector, float);       //!< what retrieval searches with
RECPIPE_COLUMN(candidates, per_request_list, id_type);         //!< the current candidate items
RECPIPE_COLUMN(retrieval_score, per_candidate, float);         //!< similarity from retrieval
RECPIPE_COLUMN(item_embedding, per_candidate_vector, float);   //!< a stored item vector
RECPIPE_COLUMN(item_features, per_candidate_vector, float);    //!< dense item features for a model
RECPIPE_COLUMN(score, per_candidate, float);                   //!< the ranking model's score
RECPIPE_COLUMN(user_unknown, per_request, std::uint8_t);       //!< 1: a lookup found no stored row (flag_missing)
RECPIPE_COLUMN(item_unknown, per_candidate, std::uint8_t);     //!< 1: an item lookup found no stored row
}  // namespace col
RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
