/* tests/outbox/test_store_status.c — which C-STORE response statuses count as delivered
 * (scp_store_status_delivered): Success and the Warnings of PS3.4 B.2.3 and PS3.7 Annex C
 * (Bxxx, 0001, 0107, 0116) do; Failures, Cancel and Pending do not. The outbox's retry rules
 * for failures are tested against live peers (test_*.sh here). */
#include <stdio.h>

#include "scp/scp.h"

int main(void)
{
    static const unsigned delivered[] = {0x0000, 0x0001, 0x0107, 0x0116, 0xB000, 0xB006, 0xB007};
    static const unsigned refused[] = {0x0105, 0x0106, 0x0110, 0x0111, 0x0112, 0x0117, 0x0122,
                                       0x0124, 0x0210, 0x0211, 0x0212, 0x0213, 0xA700, 0xA7FF,
                                       0xA900, 0xC000, 0xCFFF, 0xFE00, 0xFF00, 0xFFFF};
    int nfail = 0;
    for (size_t i = 0; i < sizeof delivered / sizeof delivered[0]; i++)
        if (!scp_store_status_delivered(delivered[i])) {
            fprintf(stderr, "FAIL: 0x%04x should count as delivered\n", delivered[i]);
            nfail++;
        }
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++)
        if (scp_store_status_delivered(refused[i])) {
            fprintf(stderr, "FAIL: 0x%04x should count as not delivered\n", refused[i]);
            nfail++;
        }
    printf("%d statuses checked, %d failed\n",
           (int)(sizeof delivered / sizeof delivered[0] + sizeof refused / sizeof refused[0]), nfail);
    return nfail ? 1 : 0;
}
