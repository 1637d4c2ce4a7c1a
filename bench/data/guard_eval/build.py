"""Builds bench/data/guard_eval/pairs.jsonl: the near-miss guard's evaluation set.

The pairs are data below, written for this set (not derived from bench/data/cache_pairs*.jsonl),
grouped by kind and domain. Each pair is `(a, b)`: `a` is the stored question, `b` the one looked
up. Near-miss kinds: a cached answer to `a` would be wrong for `b`; paraphrase kinds: the same
answer serves both.

The split is stratified by label x kind x domain: each cell is shuffled with a fixed seed and cut
in half; when a cell is odd, its extra pair goes to "test" or "tune" in a checkerboard over kind x
domain, so each kind and each domain is split near half and half as well. Ids follow the order of
the data.

Run: `python bench/data/guard_eval/build.py` (rewrites pairs.jsonl, then validates it).
"""

# NOTE: each question stays on one line, however long, so that it can be found with grep.
# ruff: noqa: E501

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path[:0] = [str(ROOT)]

from bench.guard_eval import DATA, DOMAINS, KIND_LABEL, KINDS, validate  # noqa: E402

SEED = 20240611

Pairs = dict[str, list[tuple[str, str]]]

NUMBER_UNIT: Pairs = {
    "ops_support": [
        ("Which service listens on port 3306 by default?", "Which service listens on port 5432 by default?"),
        (
            "What does an HTTP 502 from our load balancer mean?",
            "What does an HTTP 504 from our load balancer mean?",
        ),
        (
            "How many usable host addresses are in a /24 subnet?",
            "How many usable host addresses are in a /26 subnet?",
        ),
        (
            "Is 4 GB of RAM enough to run a three-node Kafka cluster locally?",
            "Is 64 GB of RAM enough to run a three-node Kafka cluster locally?",
        ),
        (
            "Is a 512Mi memory limit enough for a JVM pod with a 1 GB heap?",
            "Is a 512Gi memory limit enough for a JVM pod with a 1 GB heap?",
        ),
        (
            "My server's load average is 0.5 on a 4-core box; is that a problem?",
            "My server's load average is 50 on a 4-core box; is that a problem?",
        ),
        (
            "When does a client start renewing a DHCP lease of 8 hours?",
            "When does a client start renewing a DHCP lease of 24 hours?",
        ),
        ("What does exit code 137 mean for a container?", "What does exit code 143 mean for a container?"),
        (
            "Can I upload a 4 GB file to S3 with a single PUT request?",
            "Can I upload a 40 GB file to S3 with a single PUT request?",
        ),
        (
            "How much usable space do four 4 TB disks give in RAID 5?",
            "How much usable space do four 8 TB disks give in RAID 5?",
        ),
        ("What does `chmod 755` do to a script?", "What does `chmod 644` do to a script?"),
    ],
    "programming": [
        ("What does `2 ** 10` evaluate to in Python?", "What does `2 ** 16` evaluate to in Python?"),
        (
            "What is the maximum value of a signed 32-bit integer?",
            "What is the maximum value of a signed 64-bit integer?",
        ),
        ("What does `range(1, 10, 2)` produce in Python?", "What does `range(1, 10, 3)` produce in Python?"),
        ("What is the result of `7 // 2` in Python?", "What is the result of `-7 // 2` in Python?"),
        (
            "What does `items[::2]` return for a Python list?",
            "What does `items[::-2]` return for a Python list?",
        ),
        ("What does `float('1e3')` return in Python?", "What does `float('1e-3')` return in Python?"),
        (
            "How do I round a float to 2 decimal places in Python?",
            "How do I round a float to 4 decimal places in Python?",
        ),
        ("What does `git reset --soft HEAD~1` undo?", "What does `git reset --soft HEAD~3` undo?"),
        ('What does printf("%.2f", 3.14159) print in C?', 'What does printf("%.3f", 3.14159) print in C?'),
        ("What is `0xFF` in decimal?", "What is `0xFFF` in decimal?"),
        (
            "What does `Math.round(2.5)` return in JavaScript?",
            "What does `Math.round(-2.5)` return in JavaScript?",
        ),
    ],
    "general_knowledge": [
        (
            "What is normal human body temperature in Celsius?",
            "What is normal human body temperature in Fahrenheit?",
        ),
        ("How many kilometres is 10 miles?", "How many kilometres is 100 miles?"),
        (
            "How long does sunlight take to reach Earth, in minutes?",
            "How long does sunlight take to reach Earth, in seconds?",
        ),
        ("What is 12% of 250?", "What is 20% of 250?"),
        ("How many teaspoons are in a tablespoon?", "How many teaspoons are in a cup?"),
        ("How many feet are in a mile?", "How many feet are in a kilometre?"),
        ("What is the speed of sound in km/h?", "What is the speed of sound in m/s?"),
        ("What's 5 ounces in grams?", "What's 5 pounds in grams?"),
        (
            "What is the area of a circle with a radius of 3 cm?",
            "What is the area of a circle with a radius of 30 cm?",
        ),
        ("How many calories are in 100 g of banana?", "How many calories are in 1 kg of banana?"),
        ("How many seconds are there in a day?", "How many seconds are there in a week?"),
    ],
    "rag_documents": [
        (
            "What does section 4.2 of the maintenance manual say about the pump seal?",
            "What does section 4.3 of the maintenance manual say about the pump seal?",
        ),
        (
            "According to the expense policy, which receipts are needed for purchases over $50?",
            "According to the expense policy, which receipts are needed for purchases over $500?",
        ),
        (
            "What does clause 12 of the vendor contract cover?",
            "What does clause 21 of the vendor contract cover?",
        ),
        (
            "Per the travel policy, which cabin class can I book for flights longer than 6 hours?",
            "Per the travel policy, which cabin class can I book for flights longer than 16 hours?",
        ),
        ("What's on page 12 of the employee handbook?", "What's on page 112 of the employee handbook?"),
        (
            "What does the SLA document promise customers on the 99.9% uptime tier?",
            "What does the SLA document promise customers on the 99.99% uptime tier?",
        ),
        ("What does table 3 in the audit report show?", "What does table 8 in the audit report show?"),
        (
            "According to the safety manual, what hearing protection is required above 85 dB?",
            "According to the safety manual, what hearing protection is required above 100 dB?",
        ),
        (
            "What does the lease agreement say about a 30-day notice period?",
            "What does the lease agreement say about a 90-day notice period?",
        ),
        (
            "What does step 3 of the installation guide tell me to do?",
            "What does step 5 of the installation guide tell me to do?",
        ),
        (
            "Under the refund policy, can I return an item after 14 days?",
            "Under the refund policy, can I return an item after 45 days?",
        ),
        (
            "In the wiring diagram, what is connected to pin 7 of the controller?",
            "In the wiring diagram, what is connected to pin 17 of the controller?",
        ),
    ],
}

SCALAR: Pairs = {
    "ops_support": [
        (
            "How do I find the largest files on a Linux server?",
            "How do I find the smallest files on a Linux server?",
        ),
        (
            "How do I find the oldest log files in /var/log?",
            "How do I find the newest log files in /var/log?",
        ),
        (
            "Which process is using the most memory on my server?",
            "Which process is using the least memory on my server?",
        ),
        ("How do I view the first lines of a log file?", "How do I view the last lines of a log file?"),
        (
            "How does the Kubernetes HPA decide when to scale up?",
            "How does the Kubernetes HPA decide when to scale down?",
        ),
        (
            "Why is my upload speed higher than my download speed?",
            "Why is my upload speed lower than my download speed?",
        ),
        (
            "How do I find the most frequently executed queries in Postgres?",
            "How do I find the least frequently executed queries in Postgres?",
        ),
        ("Which EBS volume type has the highest IOPS?", "Which EBS volume type has the lowest IOPS?"),
        ("How do I find the oldest pod in a namespace?", "How do I find the youngest pod in a namespace?"),
        (
            "Should I reduce the TTL on a DNS record before a migration?",
            "Should I increase the TTL on a DNS record before a migration?",
        ),
        (
            "What is the minimum password length our Active Directory allows?",
            "What is the maximum password length our Active Directory allows?",
        ),
    ],
    "programming": [
        (
            "How do I find the maximum value in a Rust vector?",
            "How do I find the minimum value in a Rust vector?",
        ),
        (
            "How do I sort a list in descending order in Python?",
            "How do I sort a list in ascending order in Python?",
        ),
        (
            "How do I get the first element of a JavaScript array?",
            "How do I get the last element of a JavaScript array?",
        ),
        ("How do I round a number up in JavaScript?", "How do I round a number down in JavaScript?"),
        (
            "How do I find the oldest commit in a git repository?",
            "How do I find the newest commit in a git repository?",
        ),
        (
            "How do I remove the first character of a string in Python?",
            "How do I remove the last character of a string in Python?",
        ),
        ("How do I find the longest string in a list?", "How do I find the shortest string in a list?"),
        (
            "How do I get the index of the largest element in a NumPy array?",
            "How do I get the index of the smallest element in a NumPy array?",
        ),
        ("How do I get tomorrow's date in JavaScript?", "How do I get yesterday's date in JavaScript?"),
        (
            "What does upper_bound return for a C++ std::map?",
            "What does lower_bound return for a C++ std::map?",
        ),
        (
            "How do I find the earliest date in a pandas column?",
            "How do I find the latest date in a pandas column?",
        ),
    ],
    "general_knowledge": [
        ("Which planet has the most moons?", "Which planet has the fewest moons?"),
        (
            "What is the hottest planet in the solar system?",
            "What is the coldest planet in the solar system?",
        ),
        ("Who was the first person to walk on the Moon?", "Who was the last person to walk on the Moon?"),
        ("Which is the largest ocean on Earth?", "Which is the smallest ocean on Earth?"),
        (
            "What is the highest temperature ever recorded on Earth?",
            "What is the lowest temperature ever recorded on Earth?",
        ),
        (
            "Which African country has the largest population?",
            "Which African country has the smallest population?",
        ),
        ("What is the fastest land animal?", "What is the slowest land animal?"),
        (
            "When is the longest day of the year in the Northern Hemisphere?",
            "When is the shortest day of the year in the Northern Hemisphere?",
        ),
        ("Which element is the densest?", "Which element is the least dense?"),
        (
            "What is the northernmost capital city in the world?",
            "What is the southernmost capital city in the world?",
        ),
        ("Which planet is closest to the Sun?", "Which planet is farthest from the Sun?"),
    ],
    "rag_documents": [
        (
            "What's the earliest start time allowed under the flexible hours policy?",
            "What's the latest start time allowed under the flexible hours policy?",
        ),
        (
            "According to the maintenance manual, what is the maximum torque for the wheel bolts?",
            "According to the maintenance manual, what is the minimum torque for the wheel bolts?",
        ),
        (
            "In the annual report, which quarter had the highest revenue?",
            "In the annual report, which quarter had the lowest revenue?",
        ),
        (
            "According to the data retention policy, what is the shortest retention period?",
            "According to the data retention policy, what is the longest retention period?",
        ),
        (
            "What's the first step in the incident response runbook?",
            "What's the last step in the incident response runbook?",
        ),
        (
            "According to the lab safety guide, what is the maximum storage temperature for the reagents?",
            "According to the lab safety guide, what is the minimum storage temperature for the reagents?",
        ),
        (
            "What happens on the first day, according to the onboarding guide?",
            "What happens on the last day, according to the onboarding guide?",
        ),
        (
            "Which plan does the pricing sheet list as the cheapest?",
            "Which plan does the pricing sheet list as the most expensive?",
        ),
        (
            "What does the bond prospectus say happens to the coupon if interest rates rise?",
            "What does the bond prospectus say happens to the coupon if interest rates fall?",
        ),
        (
            "According to the contract, what is the earliest date we can terminate?",
            "According to the contract, what is the latest date we can terminate?",
        ),
        (
            "In the staff survey results, which department was the most satisfied?",
            "In the staff survey results, which department was the least satisfied?",
        ),
    ],
}

ROLE_DIRECTION: Pairs = {
    "ops_support": [
        (
            "How do I copy a file from my host to a Docker container?",
            "How do I copy a file from a Docker container to my host?",
        ),
        (
            "How do I migrate a database from MySQL to PostgreSQL?",
            "How do I migrate a database from PostgreSQL to MySQL?",
        ),
        (
            "How do I forward traffic from port 80 to port 8080 with iptables?",
            "How do I forward traffic from port 8080 to port 80 with iptables?",
        ),
        (
            "How do I sync files from the server to my laptop with rsync?",
            "How do I sync files from my laptop to the server with rsync?",
        ),
        (
            "How do I give user alice access to bob's home directory?",
            "How do I give user bob access to alice's home directory?",
        ),
        (
            "How do I route traffic from the VPN to the office LAN?",
            "How do I route traffic from the office LAN to the VPN?",
        ),
        (
            "How do I transfer a domain from GoDaddy to Cloudflare?",
            "How do I transfer a domain from Cloudflare to GoDaddy?",
        ),
        (
            "How do I open an SSH tunnel from the remote server to my local machine?",
            "How do I open an SSH tunnel from my local machine to the remote server?",
        ),
        ("How do I move a VM from VMware to Hyper-V?", "How do I move a VM from Hyper-V to VMware?"),
        (
            "How do I allow the web subnet to reach the database subnet in an AWS security group?",
            "How do I allow the database subnet to reach the web subnet in an AWS security group?",
        ),
        ("Why does ping work but curl doesn't?", "Why does curl work but ping doesn't?"),
        (
            "How do I restore a backup from the production cluster to the staging cluster?",
            "How do I restore a backup from the staging cluster to the production cluster?",
        ),
    ],
    "programming": [
        (
            "How do I convert a string to an integer in Python?",
            "How do I convert an integer to a string in Python?",
        ),
        ("How do I convert a set to a tuple in Python?", "How do I convert a tuple to a set in Python?"),
        ("How do I convert JSON to YAML in Python?", "How do I convert YAML to JSON in Python?"),
        ("How do I cast a float to an int in Java?", "How do I cast an int to a float in Java?"),
        ("How do I merge the develop branch into main?", "How do I merge the main branch into develop?"),
        ("How do I convert bytes to str in Python 3?", "How do I convert str to bytes in Python 3?"),
        ("How do I map a Kotlin data class to JSON?", "How do I map JSON to a Kotlin data class?"),
        (
            "How do I pass data from a parent component to a child component in React?",
            "How do I pass data from a child component to a parent component in React?",
        ),
        (
            "How do I convert a Unix timestamp to a datetime in Python?",
            "How do I convert a datetime to a Unix timestamp in Python?",
        ),
        (
            "How do I convert a NumPy array to a pandas DataFrame?",
            "How do I convert a pandas DataFrame to a NumPy array?",
        ),
        (
            "How do I convert a char array to a String in Java?",
            "How do I convert a String to a char array in Java?",
        ),
    ],
    "general_knowledge": [
        ("How do I convert kilometres to miles?", "How do I convert miles to kilometres?"),
        ("How many hours ahead of London is Tokyo?", "How many hours ahead of Tokyo is London?"),
        (
            "Who did Muhammad Ali beat in the Rumble in the Jungle?",
            "Who beat Muhammad Ali in the Rumble in the Jungle?",
        ),
        ("Is Canada north of the United States?", "Is the United States north of Canada?"),
        ("Who did Queen Victoria succeed?", "Who succeeded Queen Victoria?"),
        ("Who taught Plato?", "Who did Plato teach?"),
        ("Does the Nile flow from south to north?", "Does the Nile flow from north to south?"),
        ("Do owls eat mice?", "Do mice eat owls?"),
        ("Is Mount Everest higher than K2?", "Is K2 higher than Mount Everest?"),
        ("Is Australia larger than Greenland?", "Is Greenland larger than Australia?"),
        ("Does the Earth orbit the Sun?", "Does the Sun orbit the Earth?"),
    ],
    "rag_documents": [
        (
            "According to the org chart, who reports to the head of finance?",
            "According to the org chart, who does the head of finance report to?",
        ),
        (
            "Per the contract, what does the supplier owe the customer if delivery is late?",
            "Per the contract, what does the customer owe the supplier if delivery is late?",
        ),
        (
            "According to the migration guide, how do I move settings from the old console to the new console?",
            "According to the migration guide, how do I move settings from the new console to the old console?",
        ),
        (
            "What does the lease say the landlord must pay the tenant?",
            "What does the lease say the tenant must pay the landlord?",
        ),
        (
            "According to the network diagram, which firewall rules allow traffic from the DMZ to the internal network?",
            "According to the network diagram, which firewall rules allow traffic from the internal network to the DMZ?",
        ),
        (
            "In the style guide, how should I convert British spelling to American spelling?",
            "In the style guide, how should I convert American spelling to British spelling?",
        ),
        (
            "According to the escalation policy, when does the support desk escalate to engineering?",
            "According to the escalation policy, when does engineering escalate to the support desk?",
        ),
        (
            "What notice must the employer give the employee before termination, according to the contract?",
            "What notice must the employee give the employer before termination, according to the contract?",
        ),
        (
            "According to the integration guide, how do I push data from Salesforce to our warehouse?",
            "According to the integration guide, how do I push data from our warehouse to Salesforce?",
        ),
        (
            "Per the shipping manual, how are pallets moved from the dock to cold storage?",
            "Per the shipping manual, how are pallets moved from cold storage to the dock?",
        ),
        (
            "According to the partnership agreement, what share of revenue does Northwind pay Contoso?",
            "According to the partnership agreement, what share of revenue does Contoso pay Northwind?",
        ),
    ],
}

POLARITY_VERB: Pairs = {
    "ops_support": [
        (
            "How do I lock a user account in Active Directory?",
            "How do I unlock a user account in Active Directory?",
        ),
        ("How do I start the nginx service on Ubuntu?", "How do I stop the nginx service on Ubuntu?"),
        ("How do I enable IPv6 on a Linux server?", "How do I disable IPv6 on a Linux server?"),
        ("How do I mount an NFS share on Linux?", "How do I unmount an NFS share on Linux?"),
        ("How do I encrypt a disk with LUKS?", "How do I decrypt a disk with LUKS?"),
        ("How do I install the Docker engine on Debian?", "How do I uninstall the Docker engine on Debian?"),
        (
            "How do I pause a Kubernetes deployment rollout?",
            "How do I resume a Kubernetes deployment rollout?",
        ),
        (
            "How do I import a VM appliance into VirtualBox?",
            "How do I export a VM appliance from VirtualBox?",
        ),
        ("How do I block an IP address with ufw?", "How do I unblock an IP address with ufw?"),
        (
            "How do I attach an EBS volume to an EC2 instance?",
            "How do I detach an EBS volume from an EC2 instance?",
        ),
        ("How do I cordon a Kubernetes node?", "How do I uncordon a Kubernetes node?"),
    ],
    "programming": [
        (
            "How do I serialize a Python object with pickle?",
            "How do I deserialize a Python object with pickle?",
        ),
        (
            "How do I encode a string in base64 in JavaScript?",
            "How do I decode a string in base64 in JavaScript?",
        ),
        (
            "How do I push a Docker image to a private registry?",
            "How do I pull a Docker image from a private registry?",
        ),
        ("How do I compress a file with gzip in Python?", "How do I decompress a file with gzip in Python?"),
        ("How do I show an element with jQuery?", "How do I hide an element with jQuery?"),
        ("How do I add an event listener in JavaScript?", "How do I remove an event listener in JavaScript?"),
        (
            "How do I zip two lists into a list of pairs in Python?",
            "How do I unzip a list of pairs into two lists in Python?",
        ),
        ("How do I stage a file in git?", "How do I unstage a file in git?"),
        ("How do I acquire a mutex in Go?", "How do I release a mutex in Go?"),
        ("How do I subscribe to an observable in RxJS?", "How do I unsubscribe from an observable in RxJS?"),
        ("How do I freeze an object in JavaScript?", "How do I unfreeze an object in JavaScript?"),
    ],
    "general_knowledge": [
        ("How do plants absorb carbon dioxide?", "How do plants release carbon dioxide?"),
        ("What's the best way to freeze bread?", "What's the best way to thaw bread?"),
        ("When did Britain join the European Union?", "When did Britain leave the European Union?"),
        ("How do you charge a lithium battery safely?", "How do you discharge a lithium battery safely?"),
        ("What happens when you heat a magnet?", "What happens when you cool a magnet?"),
        ("How do you inflate a bike tyre?", "How do you deflate a bike tyre?"),
        ("How do you tie a bowline knot?", "How do you untie a bowline knot?"),
        ("How do muscles contract?", "How do muscles relax?"),
        ("When did the Berlin Wall go up?", "When did the Berlin Wall come down?"),
        ("When should I plant tulip bulbs?", "When should I dig up tulip bulbs?"),
        ("Why do pupils dilate in the dark?", "Why do pupils constrict in the dark?"),
    ],
    "rag_documents": [
        (
            "According to the IT handbook, how do I enable two-factor authentication?",
            "According to the IT handbook, how do I disable two-factor authentication?",
        ),
        (
            "What does the user guide say about arming the alarm system?",
            "What does the user guide say about disarming the alarm system?",
        ),
        (
            "According to the benefits guide, how do I enroll in the dental plan?",
            "According to the benefits guide, how do I unenroll from the dental plan?",
        ),
        (
            "Per the operations manual, how do I start up the backup generator?",
            "Per the operations manual, how do I shut down the backup generator?",
        ),
        (
            "According to the newsletter FAQ, how do I subscribe?",
            "According to the newsletter FAQ, how do I unsubscribe?",
        ),
        (
            "What does the printer manual say about installing the toner cartridge?",
            "What does the printer manual say about removing the toner cartridge?",
        ),
        (
            "According to the admin guide, how do I activate a license key?",
            "According to the admin guide, how do I deactivate a license key?",
        ),
        (
            "What does the security policy say about granting admin rights?",
            "What does the security policy say about revoking admin rights?",
        ),
        (
            "According to the kiosk manual, how do I power on the terminal?",
            "According to the kiosk manual, how do I power off the terminal?",
        ),
        (
            "What does the records policy say about uploading scanned documents?",
            "What does the records policy say about downloading scanned documents?",
        ),
        (
            "According to the lab manual, how do I open the fume hood sash?",
            "According to the lab manual, how do I close the fume hood sash?",
        ),
    ],
}

NEGATION: Pairs = {
    "ops_support": [
        ("Which pods are not ready in my namespace?", "Which pods are ready in my namespace?"),
        (
            "How do I find files that do not match a pattern with find?",
            "How do I find files that match a pattern with find?",
        ),
        (
            "How do I grep for lines that don't contain 'error'?",
            "How do I grep for lines that contain 'error'?",
        ),
        ("Which users have never logged in to the domain?", "Which users have logged in to the domain?"),
        (
            "How do I list packages that were not installed from the official repo?",
            "How do I list packages that were installed from the official repo?",
        ),
        (
            "How do I list Docker containers that are not running?",
            "How do I list Docker containers that are running?",
        ),
        (
            "How do I dump every schema except public with pg_dump?",
            "How do I dump only the public schema with pg_dump?",
        ),
        (
            "How do I list the VMs that are not covered by a backup job in Veeam?",
            "How do I list the VMs that are covered by a backup job in Veeam?",
        ),
        ("How do I set up SSH login without a password?", "How do I set up SSH login with a password?"),
        (
            "Which Kubernetes pods have no resource limits set?",
            "Which Kubernetes pods have resource limits set?",
        ),
        (
            "Why is my VPN client no longer connecting automatically at login?",
            "Why is my VPN client still connecting automatically at login?",
        ),
    ],
    "programming": [
        (
            "How do I check if a key is not in a dict in Python?",
            "How do I check if a key is in a dict in Python?",
        ),
        (
            "How do I find MongoDB documents where a field is not set?",
            "How do I find MongoDB documents where a field is set?",
        ),
        (
            "How do I list git branches that are not merged into main?",
            "How do I list git branches that are merged into main?",
        ),
        (
            "How do I keep rows that don't match a regex in pandas?",
            "How do I keep rows that match a regex in pandas?",
        ),
        (
            "Why doesn't my React component re-render when its state changes?",
            "Why does my React component re-render when its state changes?",
        ),
        (
            "How do I create a Python set that cannot be modified?",
            "How do I create a Python set that can be modified?",
        ),
        (
            "How do I get all elements of list A that are not in list B?",
            "How do I get all elements of list A that are in list B?",
        ),
        (
            "How do I compile a C program without debug symbols?",
            "How do I compile a C program with debug symbols?",
        ),
        (
            "How do I write a regex that matches words not ending in 'ing'?",
            "How do I write a regex that matches words ending in 'ing'?",
        ),
        (
            "How do I sort a list in Python without changing the original list?",
            "How do I sort a list in Python and change the original list?",
        ),
        ("Which HTTP methods are not idempotent?", "Which HTTP methods are idempotent?"),
    ],
    "general_knowledge": [
        ("Which planets have no moons?", "Which planets have moons?"),
        ("Which mammals can't swim?", "Which mammals can swim?"),
        ("Which EU countries do not use the euro?", "Which EU countries use the euro?"),
        ("Which birds cannot fly?", "Which birds can fly?"),
        ("What foods are not safe for cats to eat?", "What foods are safe for cats to eat?"),
        ("Which US states don't have a sales tax?", "Which US states have a sales tax?"),
        ("Which countries don't drive on the left?", "Which countries drive on the left?"),
        ("Which countries have never hosted the Olympics?", "Which countries have hosted the Olympics?"),
        ("Which animals are no longer endangered?", "Which animals are still endangered?"),
        ("Which diseases have no vaccine?", "Which diseases have a vaccine?"),
        ("Which metals don't rust?", "Which metals rust?"),
    ],
    "rag_documents": [
        (
            "According to the benefits guide, which expenses are not covered by the health plan?",
            "According to the benefits guide, which expenses are covered by the health plan?",
        ),
        (
            "Per the leave policy, which holidays are not paid?",
            "Per the leave policy, which holidays are paid?",
        ),
        (
            "According to the security policy, which devices are not allowed on the corporate network?",
            "According to the security policy, which devices are allowed on the corporate network?",
        ),
        ("What does the warranty say is not included?", "What does the warranty say is included?"),
        (
            "According to the remote work policy, which roles can't work from home?",
            "According to the remote work policy, which roles can work from home?",
        ),
        (
            "Which sections of the contract do not apply to subcontractors?",
            "Which sections of the contract apply to subcontractors?",
        ),
        (
            "According to the return policy, which items cannot be returned?",
            "According to the return policy, which items can be returned?",
        ),
        (
            "Per the onboarding guide, which systems do new hires get access to without manager approval?",
            "Per the onboarding guide, which systems do new hires get access to with manager approval?",
        ),
        (
            "According to the fire safety manual, which doors must never be locked?",
            "According to the fire safety manual, which doors must be locked?",
        ),
        (
            "What does the data policy say about customers who have not consented to marketing?",
            "What does the data policy say about customers who have consented to marketing?",
        ),
        (
            "According to the procurement guide, which purchases don't need a purchase order?",
            "According to the procurement guide, which purchases need a purchase order?",
        ),
    ],
}

ENTITY_ATTRIBUTE: Pairs = {
    "ops_support": [
        (
            "How do I check the CPU usage of a Docker container?",
            "How do I check the memory usage of a Docker container?",
        ),
        (
            "How do I see the CPU temperature on a Linux server?",
            "How do I see the GPU temperature on a Linux server?",
        ),
        (
            "How do I find the serial number of my Dell laptop?",
            "How do I find the model number of my Dell laptop?",
        ),
        (
            "How do I increase the memory limit of a pod in Kubernetes?",
            "How do I increase the CPU limit of a pod in Kubernetes?",
        ),
        (
            "How do I list the open ports on a Windows server?",
            "How do I list the open ports on a Linux server?",
        ),
        (
            "How do I increase the inode count on an ext4 filesystem?",
            "How do I increase the inode count on an XFS filesystem?",
        ),
        (
            "How do I find the MAC address of my network card on Linux?",
            "How do I find the IP address of my network card on Linux?",
        ),
        (
            "Why is my Outlook calendar not syncing to my phone?",
            "Why are my Outlook contacts not syncing to my phone?",
        ),
        (
            "How do I measure disk latency on a Linux server?",
            "How do I measure network latency on a Linux server?",
        ),
        (
            "How do I check the logs of the kubelet on a Kubernetes worker node?",
            "How do I check the logs of the container runtime on a Kubernetes worker node?",
        ),
        (
            "How do I reset a forgotten admin password on a self-hosted Postgres server?",
            "How do I reset a forgotten admin password on a self-hosted MySQL server?",
        ),
        (
            "How do I set up daily log rotation for Apache on Ubuntu?",
            "How do I set up daily log rotation for HAProxy on Ubuntu?",
        ),
    ],
    "programming": [
        ("How do I get the length of a string in Java?", "How do I get the length of an array in Java?"),
        (
            "What is the default value of an uninitialized int field in Java?",
            "What is the default value of an uninitialized boolean field in Java?",
        ),
        (
            "How do I get the keys of a dictionary as a list in Python?",
            "How do I get the values of a dictionary as a list in Python?",
        ),
        (
            "How do I change the font size of the axis labels in matplotlib?",
            "How do I change the font size of the legend in matplotlib?",
        ),
        (
            "How do I get the number of rows in a pandas DataFrame?",
            "How do I get the number of columns in a pandas DataFrame?",
        ),
        (
            "How do I set the background colour of a div in CSS?",
            "How do I set the border colour of a div in CSS?",
        ),
        (
            "How do I read the request body in an Express route handler?",
            "How do I read the request headers in an Express route handler?",
        ),
        (
            "How do I get the file extension from a path in Python?",
            "How do I get the file name from a path in Python?",
        ),
        (
            "How do I get the user's current timestamp in browser JavaScript?",
            "How do I get the user's current timezone in browser JavaScript?",
        ),
        (
            "How do I parse an XML config file into a dictionary in Python?",
            "How do I parse a YAML config file into a dictionary in Python?",
        ),
        (
            "How do I list all the tables in the current database from the SQLite command line?",
            "How do I list all the tables in the current database from the Oracle command line?",
        ),
        (
            "How do I send a GET request with query parameters using axios in JavaScript?",
            "How do I send a GET request with query parameters using fetch in JavaScript?",
        ),
    ],
    "general_knowledge": [
        (
            "What's the population of the city of Paris in France?",
            "What's the population of the city of Lyon in France?",
        ),
        (
            "What is the melting point of pure iron in degrees Celsius?",
            "What is the melting point of pure copper in degrees Celsius?",
        ),
        (
            "What is the diameter of the planet Mars in kilometres?",
            "What is the diameter of the planet Venus in kilometres?",
        ),
        (
            "What is the atomic number of carbon on the periodic table?",
            "What is the atomic number of nitrogen on the periodic table?",
        ),
        ("Who was the mother of Queen Elizabeth II?", "Who was the father of Queen Elizabeth II?"),
        ("What is the national animal of Scotland?", "What is the national flower of Scotland?"),
        ("What is the currency of Sweden?", "What is the currency of Norway?"),
        ("How tall is the Eiffel Tower?", "How old is the Eiffel Tower?"),
        ("What is the capital of Slovakia?", "What is the capital of Slovenia?"),
        ("What is the chemical formula of acetone?", "What is the chemical formula of acetic acid?"),
        (
            "How long do elephants live in the wild on average?",
            "How long do giraffes live in the wild on average?",
        ),
    ],
    "rag_documents": [
        (
            "According to the employee handbook, how many vacation days do new hires get?",
            "According to the employee handbook, how many sick days do new hires get?",
        ),
        (
            "What does the compressor manual say about the oil filter?",
            "What does the compressor manual say about the air filter?",
        ),
        (
            "According to the onboarding guide, who is my HR contact?",
            "According to the onboarding guide, who is my IT contact?",
        ),
        (
            "What does the finance memo say the deadline is for budget submissions?",
            "What does the finance memo say the deadline is for expense reports?",
        ),
        (
            "According to the server runbook, what is the backup schedule for the database?",
            "According to the server runbook, what is the backup schedule for the file server?",
        ),
        (
            "What does the London office's travel policy say about taxis?",
            "What does the Berlin office's travel policy say about taxis?",
        ),
        (
            "Per the datasheet, what is the operating voltage range of the humidity sensor?",
            "Per the datasheet, what is the operating temperature range of the humidity sensor?",
        ),
        (
            "In the router's user manual, what does a blinking red indicator light mean?",
            "In the router's user manual, what does a blinking amber indicator light mean?",
        ),
        (
            "What does the Acme supply contract say about limitation of liability?",
            "What does the Globex supply contract say about limitation of liability?",
        ),
        (
            "What does the HR policy say about bereavement leave for part-time staff?",
            "What does the HR policy say about bereavement leave for contractors?",
        ),
        (
            "In the quarterly report, what were the sales figures for the Asia region?",
            "In the quarterly report, what were the sales figures for the Europe region?",
        ),
        (
            "What does the privacy policy say about sharing customer email addresses with partners?",
            "What does the privacy policy say about sharing customer phone numbers with partners?",
        ),
    ],
}

VERSION_TIME: Pairs = {
    "ops_support": [
        (
            "What's the default Python version on Ubuntu 20.04?",
            "What's the default Python version on Ubuntu 24.04?",
        ),
        ("How do I see yesterday's logs with journalctl?", "How do I see today's logs with journalctl?"),
        (
            "Is PodSecurityPolicy available in Kubernetes 1.21?",
            "Is PodSecurityPolicy available in Kubernetes 1.25?",
        ),
        ("Who logged into the server last week?", "Who logged into the server last month?"),
        ("Does Windows 10 still get security updates?", "Does Windows 11 still get security updates?"),
        (
            "How many round trips does the TLS 1.2 handshake take?",
            "How many round trips does the TLS 1.3 handshake take?",
        ),
        (
            "How do I restore the database to how it was before the migration?",
            "How do I restore the database to how it was after the migration?",
        ),
        ("How do I see my AWS bill for last month?", "How do I see my AWS bill for this month?"),
        (
            "How do I find files modified in the last week on Linux?",
            "How do I find files modified in the last year on Linux?",
        ),
        ("How do I run Docker Compose v1 commands?", "How do I run Docker Compose v2 commands?"),
        (
            "Is SMBv1 enabled by default on Windows Server 2012?",
            "Is SMBv1 enabled by default on Windows Server 2019?",
        ),
    ],
    "programming": [
        ("How do I use match statements in Python 3.8?", "How do I use match statements in Python 3.12?"),
        (
            "Are dict keys kept in insertion order in Python 3.5?",
            "Are dict keys kept in insertion order in Python 3.7?",
        ),
        (
            "How do I define nested routes in React Router v5?",
            "How do I define nested routes in React Router v6?",
        ),
        (
            "How do I declare block-scoped variables in ES5?",
            "How do I declare block-scoped variables in ES6?",
        ),
        ("How do I loop over a map in Java 7?", "How do I loop over a map in Java 8?"),
        ("Does Go 1.17 support generics?", "Does Go 1.18 support generics?"),
        ("How do I print without a newline in Python 2?", "How do I print without a newline in Python 3?"),
        (
            "How do I see what changed in git since yesterday?",
            "How do I see what changed in git since last week?",
        ),
        (
            "How do I write a field validator in Pydantic v1?",
            "How do I write a field validator in Pydantic v2?",
        ),
        ("What are the breaking changes in Django 4.0?", "What are the breaking changes in Django 5.0?"),
        (
            "How do I list commits before a given date with git log?",
            "How do I list commits after a given date with git log?",
        ),
    ],
    "general_knowledge": [
        ("Who won the FIFA World Cup in 2018?", "Who won the FIFA World Cup in 2022?"),
        ("Who was the US president in 1990?", "Who was the US president in 1999?"),
        ("What was the population of Ireland in 1840?", "What was the population of Ireland in 1860?"),
        ("Who won the Nobel Prize in Literature in 2016?", "Who won the Nobel Prize in Literature in 2017?"),
        (
            "What was the capital of Germany before reunification?",
            "What was the capital of Germany after reunification?",
        ),
        ("Which city hosted the Summer Olympics in 2012?", "Which city hosted the Summer Olympics in 2016?"),
        ("Who was the UK prime minister in 1938?", "Who was the UK prime minister in 1942?"),
        (
            "What was the tallest building in the world in 1935?",
            "What was the tallest building in the world in 1980?",
        ),
        ("Which team won the Super Bowl in 2020?", "Which team won the Super Bowl in 2021?"),
        ("What was the UK unemployment rate in 2010?", "What was the UK unemployment rate in 2019?"),
        (
            "What did people use for lighting in the Middle Ages?",
            "What did people use for lighting in the Victorian era?",
        ),
    ],
    "rag_documents": [
        (
            "What did the 2022 annual report say about carbon emissions?",
            "What did the 2023 annual report say about carbon emissions?",
        ),
        (
            "According to the v1 API reference, how do I authenticate?",
            "According to the v2 API reference, how do I authenticate?",
        ),
        (
            "What did last week's status report say about the migration?",
            "What did last month's status report say about the migration?",
        ),
        (
            "In the Q1 board minutes, what was decided about hiring?",
            "In the Q3 board minutes, what was decided about hiring?",
        ),
        (
            "According to the 2019 handbook, how many remote days were allowed?",
            "According to the 2024 handbook, how many remote days were allowed?",
        ),
        (
            "What does revision B of the drawing specify for the mounting bolt?",
            "What does revision C of the drawing specify for the mounting bolt?",
        ),
        (
            "What did the parking policy say before the March update?",
            "What did the parking policy say after the March update?",
        ),
        ("What changed in version 3 of the design doc?", "What changed in version 4 of the design doc?"),
        (
            "According to yesterday's incident report, what caused the outage?",
            "According to today's incident report, what caused the outage?",
        ),
        (
            "What was the refund window in the old terms of service?",
            "What is the refund window in the current terms of service?",
        ),
        (
            "In the 2021 edition of the safety manual, what are the evacuation steps?",
            "In the 2025 edition of the safety manual, what are the evacuation steps?",
        ),
    ],
}

LEXICAL: Pairs = {
    "ops_support": [
        ("How do I turn on firewall logging in ufw?", "How do I enable firewall logging in ufw?"),
        (
            "How do I fix a 'permission denied' error when running a shell script?",
            "How do I resolve a 'permission denied' error when running a shell script?",
        ),
        (
            "My laptop won't connect to the office Wi-Fi, what should I check?",
            "My notebook won't connect to the office Wi-Fi, what should I check?",
        ),
        ("How do I clear the DNS cache on a Mac?", "How do I flush the DNS cache on a Mac?"),
        ("How can I speed up a slow Postgres query?", "How can I speed up a sluggish Postgres query?"),
        (
            "What's the quickest way to free up disk space on an Ubuntu server?",
            "What's the fastest way to reclaim disk space on an Ubuntu server?",
        ),
        (
            "How do I reboot all pods of a Kubernetes deployment?",
            "How do I restart all pods of a Kubernetes deployment?",
        ),
        ("Why does my Wi-Fi connection keep dropping?", "Why does my wireless connection keep dropping?"),
        (
            "How do I view the contents of a Kubernetes secret?",
            "How do I see the contents of a Kubernetes secret?",
        ),
        ("How do I change my account password in Okta?", "How do I update my account password in Okta?"),
        (
            "What's the cause of high latency on our load balancer?",
            "What's the reason for high latency on our load balancer?",
        ),
    ],
    "programming": [
        ("How do I fix a merge conflict in git?", "How do I resolve a merge conflict in git?"),
        (
            "What's the simplest way to reverse a string in Python?",
            "What's the easiest way to reverse a string in Python?",
        ),
        ("How do I fetch JSON from an API in JavaScript?", "How do I grab JSON from an API in JavaScript?"),
        ("How do I concatenate two arrays in JavaScript?", "How do I combine two arrays in JavaScript?"),
        ("Why is my Python script so slow?", "Why is my Python script so sluggish?"),
        (
            "How do I check whether a file exists in Python?",
            "How do I verify whether a file exists in Python?",
        ),
        (
            "How do I make a deep copy of an object in JavaScript?",
            "How do I make a deep clone of an object in JavaScript?",
        ),
        (
            "What is the purpose of the `__init__` method in Python?",
            "What is the role of the `__init__` method in Python?",
        ),
        ("How do I debug a segmentation fault in C?", "How do I troubleshoot a segmentation fault in C?"),
        (
            "How do I split a big function into smaller ones?",
            "How do I break a large function into smaller ones?",
        ),
        (
            "How do I tally the occurrences of each word in a Python string?",
            "How do I count the occurrences of each word in a Python string?",
        ),
    ],
    "general_knowledge": [
        ("Why do onions make people cry?", "Why do onions make people tear up?"),
        ("What is the biggest desert in the world?", "What is the largest desert in the world?"),
        ("How far is the Moon from Earth?", "How distant is the Moon from Earth?"),
        ("Who invented the telephone?", "Who came up with the telephone?"),
        ("What do koalas eat?", "What do koalas feed on?"),
        ("What causes tsunamis?", "What triggers tsunamis?"),
        ("What is the main language spoken in Quebec?", "What is the primary language spoken in Quebec?"),
        ("Why did the Roman Empire fall?", "Why did the Roman Empire collapse?"),
        ("What are the symptoms of heatstroke?", "What are the signs of heatstroke?"),
        ("How many bones does an adult human body have?", "How many bones does a grown-up human body have?"),
        ("What's the best time of year to visit Japan?", "What's the ideal time of year to visit Japan?"),
        ("Is a tomato a fruit or a vegetable?", "Is a tomato a fruit or a veggie?"),
    ],
    "rag_documents": [
        (
            "According to the employee handbook, what is the dress code?",
            "According to the staff handbook, what is the dress code?",
        ),
        (
            "What does the travel policy say about meal expenses?",
            "What does the travel policy say about food expenses?",
        ),
        (
            "Per the maintenance manual, how often should the air filter be replaced?",
            "Per the maintenance manual, how often should the air filter be changed?",
        ),
        (
            "What does the onboarding guide say about the probation period?",
            "What does the onboarding guide say about the trial period?",
        ),
        (
            "According to the IT policy, can I use my own laptop for work?",
            "According to the IT policy, can I use my personal laptop for work?",
        ),
        ("What does the lease agreement say about pets?", "What does the rental agreement say about pets?"),
        (
            "In the printer manual, how do I fix a paper jam?",
            "In the printer manual, how do I clear a paper jam?",
        ),
        (
            "According to the security guidelines, how often must passwords be changed?",
            "According to the security guidelines, how frequently must passwords be changed?",
        ),
        (
            "What does the benefits brochure say about parental leave?",
            "What does the benefits leaflet say about parental leave?",
        ),
        (
            "According to the contract, what is the penalty for late delivery?",
            "According to the contract, what is the fine for late delivery?",
        ),
        (
            "What does the camera's user guide say about cleaning the lens?",
            "What does the camera's user manual say about cleaning the lens?",
        ),
    ],
}

SYNTACTIC: Pairs = {
    "ops_support": [
        (
            "How do I check which version of Kubernetes my cluster runs?",
            "Which Kubernetes version is my cluster running, and how do I check?",
        ),
        (
            "Can you tell me how to find my public IP address from the terminal?",
            "How do I find my public IP address from the terminal?",
        ),
        (
            "What's the way to list all files a process has open on Linux?",
            "How do I list all the files a process has open on Linux?",
        ),
        (
            "How is a Kubernetes Service different from an Ingress?",
            "What's the difference between a Kubernetes Service and an Ingress?",
        ),
        (
            "Where are the nginx error logs stored on Ubuntu?",
            "On Ubuntu, where does nginx store its error logs?",
        ),
        (
            "The disk on my server is full; how do I find what is using the space?",
            "How do I find what is using the space on my server's full disk?",
        ),
        (
            "How do I get a shell inside a running Docker container?",
            "What command gives me a shell inside a running Docker container?",
        ),
        (
            "Is there a way to see when a website's TLS certificate expires from the command line?",
            "From the command line, how do I see when a website's TLS certificate expires?",
        ),
        (
            "Why does my SSH session time out after a few minutes of inactivity?",
            "After a few minutes of inactivity my SSH session times out. Why?",
        ),
        (
            "What should I do when a Kubernetes pod is stuck in Pending?",
            "A Kubernetes pod is stuck in Pending. What should I do?",
        ),
        (
            "How do I find out who has sudo rights on a Linux box?",
            "Who has sudo rights on a Linux box, and how can I find out?",
        ),
    ],
    "programming": [
        (
            "How do I strip leading zeros from a string in Python?",
            "In Python, how can leading zeros be stripped from a string?",
        ),
        ("What's the way to pass a custom header to curl?", "How do I pass a custom header to curl?"),
        (
            "Can you tell me how to read environment variables in Node.js?",
            "How are environment variables read in Node.js?",
        ),
        (
            "How do I check if a string starts with a prefix in Go?",
            "In Go, how can I check whether a string starts with a prefix?",
        ),
        (
            "What does the spread operator do in JavaScript?",
            "In JavaScript, what is the spread operator used for?",
        ),
        (
            "Why is a mutable default argument dangerous in Python?",
            "What makes a mutable default argument dangerous in Python?",
        ),
        (
            "How do I get the current working directory in Python?",
            "What's the way to get the current working directory in Python?",
        ),
        (
            "What is the difference between `==` and `is` in Python?",
            "How does `is` differ from `==` in Python?",
        ),
        (
            "How can a git commit message be changed after pushing?",
            "How do I change a git commit message after I've pushed it?",
        ),
        (
            "How do I write a list of dictionaries to a CSV file in Python?",
            "In Python, how can a list of dictionaries be written to a CSV file?",
        ),
        (
            "How do I catch several exceptions in one except clause in Python?",
            "In Python, can one except clause catch several exceptions, and how?",
        ),
    ],
    "general_knowledge": [
        ("Why do dogs howl at sirens?", "What makes dogs howl at sirens?"),
        (
            "Who painted the ceiling of the Sistine Chapel?",
            "The ceiling of the Sistine Chapel was painted by whom?",
        ),
        ("What is the speed of sound in water?", "In water, how fast does sound travel?"),
        ("Can you tell me what the capital of New Zealand is?", "What is New Zealand's capital?"),
        ("How do hurricanes form?", "What is the process by which hurricanes form?"),
        ("When did the Titanic sink?", "In what year did the Titanic sink?"),
        ("What's the chemical formula of table salt?", "Table salt has what chemical formula?"),
        ("Which planet is known as the Red Planet?", "The Red Planet is which planet?"),
        ("How does photosynthesis work?", "Could you explain how photosynthesis works?"),
        ("Who discovered penicillin?", "By whom was penicillin discovered?"),
        ("Why do we have leap years?", "What is the reason we have leap years?"),
    ],
    "rag_documents": [
        (
            "According to the handbook, how many days of paternity leave do fathers get?",
            "How many days of paternity leave do fathers get according to the handbook?",
        ),
        (
            "What does the safety manual say to do in case of a gas leak?",
            "In case of a gas leak, what does the safety manual say to do?",
        ),
        (
            "Can you tell me what the expense policy says about client dinners?",
            "What does the expense policy say about client dinners?",
        ),
        (
            "Who approves overtime requests according to the HR policy?",
            "According to the HR policy, overtime requests are approved by whom?",
        ),
        (
            "What warranty period does the product manual give for the battery?",
            "How long is the battery warranty period, according to the product manual?",
        ),
        (
            "Where does the runbook say the backup keys are stored?",
            "According to the runbook, where are the backup keys stored?",
        ),
        (
            "What does the quality manual require before a batch is released?",
            "Before a batch is released, what does the quality manual require?",
        ),
        (
            "How should visitors be registered, according to the site security plan?",
            "According to the site security plan, what's the way to register visitors?",
        ),
        (
            "Does the leave policy allow carrying over unused leave?",
            "Is carrying over unused leave allowed by the leave policy?",
        ),
        (
            "What is the procedure in the lab manual for disposing of broken glass?",
            "How does the lab manual say broken glass should be disposed of?",
        ),
        (
            "Under the grant agreement, which costs are eligible?",
            "Which costs are eligible under the grant agreement?",
        ),
    ],
}

VERB_SYNONYM: Pairs = {
    "ops_support": [
        ("How do I create a new role in PostgreSQL?", "How do I add a new role in PostgreSQL?"),
        ("How do I delete a Kubernetes namespace?", "How do I remove a Kubernetes namespace?"),
        (
            "How do I move a VM to another host in vSphere?",
            "How do I migrate a VM to another host in vSphere?",
        ),
        ("How do I set up a swap file on Ubuntu?", "How do I configure a swap file on Ubuntu?"),
        ("How do I show the routing table on Linux?", "How do I display the routing table on Linux?"),
        ("How do I retrieve the logs of a crashed pod?", "How do I get the logs of a crashed pod?"),
        (
            "How do I modify the hostname of a Linux server?",
            "How do I change the hostname of a Linux server?",
        ),
        (
            "How do I securely erase all data on an old hard drive?",
            "How do I securely wipe all data on an old hard drive?",
        ),
        (
            "How do I build a Docker image from a Dockerfile?",
            "How do I create a Docker image from a Dockerfile?",
        ),
        ("How do I locate large log files on a server?", "How do I find large log files on a server?"),
        (
            "How do I inspect the contents of a tar archive without extracting it?",
            "How do I examine the contents of a tar archive without extracting it?",
        ),
    ],
    "programming": [
        ("How do I create an empty DataFrame in pandas?", "How do I make an empty DataFrame in pandas?"),
        (
            "How do I remove a key from a dictionary in Python?",
            "How do I delete a key from a dictionary in Python?",
        ),
        ("How do I retrieve query parameters in Express?", "How do I get query parameters in Express?"),
        ("How do I display an image in a Jupyter notebook?", "How do I show an image in a Jupyter notebook?"),
        ("How do I generate a random integer in Rust?", "How do I produce a random integer in Rust?"),
        (
            "How do I set up Prettier in a TypeScript project?",
            "How do I configure Prettier in a TypeScript project?",
        ),
        (
            "How do I extract the domain from a URL in Python?",
            "How do I pull out the domain from a URL in Python?",
        ),
        (
            "How do I move a file to another folder in Python?",
            "How do I relocate a file to another folder in Python?",
        ),
        (
            "How do I check the type of a variable in JavaScript?",
            "How do I determine the type of a variable in JavaScript?",
        ),
        ("How do I build a REST API with FastAPI?", "How do I create a REST API with FastAPI?"),
        (
            "How do I trim trailing zeros from a BigDecimal in Java?",
            "How do I strip trailing zeros from a BigDecimal in Java?",
        ),
    ],
    "general_knowledge": [
        ("How do bees make honey?", "How do bees produce honey?"),
        (
            "Who founded the city of Rome, according to legend?",
            "Who established the city of Rome, according to legend?",
        ),
        (
            "How did the ancient Egyptians build the pyramids?",
            "How did the ancient Egyptians construct the pyramids?",
        ),
        ("How do chameleons change colour?", "How do chameleons alter their colour?"),
        (
            "Who developed the theory of evolution by natural selection?",
            "Who formulated the theory of evolution by natural selection?",
        ),
        ("How do I get rid of fruit flies in the kitchen?", "How do I eliminate fruit flies in the kitchen?"),
        ("How does the body absorb iron?", "How does the body take up iron?"),
        (
            "How do you remove a red wine stain from a carpet?",
            "How do you get a red wine stain out of a carpet?",
        ),
        ("How do birds find their way during migration?", "How do birds navigate during migration?"),
        ("How do you calculate the area of a triangle?", "How do you compute the area of a triangle?"),
        ("How do vaccines protect against disease?", "How do vaccines guard against disease?"),
    ],
    "rag_documents": [
        (
            "According to the HR portal guide, how do I submit a leave request?",
            "According to the HR portal guide, how do I file a leave request?",
        ),
        (
            "What does the admin manual say about how to create a new project?",
            "What does the admin manual say about how to add a new project?",
        ),
        (
            "According to the records policy, when should old invoices be destroyed?",
            "According to the records policy, when should old invoices be discarded?",
        ),
        (
            "How do I retrieve archived emails, according to the IT handbook?",
            "How do I get archived emails, according to the IT handbook?",
        ),
        (
            "Per the setup guide, how do I configure the VPN client?",
            "Per the setup guide, how do I set up the VPN client?",
        ),
        (
            "According to the facilities guide, how do I book a meeting room?",
            "According to the facilities guide, how do I reserve a meeting room?",
        ),
        (
            "According to the warehouse manual, how should incoming returns be inspected?",
            "According to the warehouse manual, how should incoming returns be checked?",
        ),
        (
            "What does the finance handbook say about how to approve invoices?",
            "What does the finance handbook say about how to sign off on invoices?",
        ),
        (
            "According to the project charter, who will lead the migration?",
            "According to the project charter, who will head the migration?",
        ),
        (
            "In the compliance guide, how do I obtain customer consent?",
            "In the compliance guide, how do I get customer consent?",
        ),
        (
            "According to the release checklist, how do I verify the build?",
            "According to the release checklist, how do I check the build?",
        ),
    ],
}

IDIOM_ADVERB: Pairs = {
    "ops_support": [
        (
            "Once the server reboots, how do I make sure the service starts automatically?",
            "After the server reboots, how do I make sure the service starts automatically?",
        ),
        (
            "My printer doesn't work anymore after the update; how do I fix it?",
            "My printer no longer works after the update; how do I fix it?",
        ),
        (
            "How do I give a couple of users admin rights in Jira?",
            "How do I give a few users admin rights in Jira?",
        ),
        (
            "How do I copy files from one laptop to the other over Wi-Fi?",
            "How do I copy files between two laptops over Wi-Fi?",
        ),
        (
            "First, how do I check that the DNS record has propagated?",
            "To begin with, how do I check that the DNS record has propagated?",
        ),
        (
            "My VPN keeps disconnecting; what should I check?",
            "My VPN won't stay connected; what should I check?",
        ),
        (
            "Is there one command to see all listening ports on Linux?",
            "Is there a single command to see all listening ports on Linux?",
        ),
        (
            "How do I stop Outlook from asking for my password over and over?",
            "How do I stop Outlook from asking for my password again and again?",
        ),
        (
            "Nothing happens when I click the Teams icon; what can I do?",
            "The Teams icon does not respond when I click it; what can I do?",
        ),
        (
            "How do I make sure only one instance of a cron job runs at a time?",
            "How do I stop a cron job from overlapping with itself?",
        ),
        (
            "My hard drive makes a clicking noise every once in a while; is it failing?",
            "My hard drive occasionally makes a clicking noise; is it failing?",
        ),
    ],
    "programming": [
        (
            "How do I run a function once a promise resolves in JavaScript?",
            "How do I run a function after a promise resolves in JavaScript?",
        ),
        (
            "My Python script doesn't work anymore after upgrading pandas; where do I start?",
            "My Python script no longer works after upgrading pandas; where do I start?",
        ),
        (
            "How do I delete a couple of local git branches at once?",
            "How do I delete a few local git branches at once?",
        ),
        (
            "How do I turn a list of lists into one flat list in Python?",
            "How do I flatten a list of lists in Python?",
        ),
        (
            "How do I write a function body that does nothing in Python?",
            "How do I write an empty function body in Python?",
        ),
        (
            "How do I swap two variables in one line of Python?",
            "How do I swap two variables in a single line of Python?",
        ),
        (
            "Why does my React component render twice in development mode?",
            "Why does my React component render two times in development mode?",
        ),
        (
            "How can I tell if an environment variable is missing in Bash?",
            "How can I tell if an environment variable isn't set in Bash?",
        ),
        ("Is there no way to overload functions in Python?", "Is function overloading impossible in Python?"),
        (
            "How do I take every other element of a Python list?",
            "How do I take every second element of a Python list?",
        ),
        (
            "To start with, how do I set up a Python virtual environment?",
            "First of all, how do I set up a Python virtual environment?",
        ),
    ],
    "general_knowledge": [
        ("Was Pluto once considered a planet?", "Was Pluto at one time considered a planet?"),
        ("Why don't penguins live in the Arctic?", "Why are there no penguins in the Arctic?"),
        ("Why has the Aral Sea almost disappeared?", "Why is there almost nothing left of the Aral Sea?"),
        (
            "What are a couple of good stretches for lower back pain?",
            "What are a few good stretches for lower back pain?",
        ),
        (
            "Why do we never see the far side of the Moon?",
            "Why is the far side of the Moon always hidden from Earth?",
        ),
        (
            "Why can't you see stars in photos taken on the Moon?",
            "Why are stars missing from photos taken on the Moon?",
        ),
        ("Why do cats always land on their feet?", "Why does a cat land on its feet every single time?"),
        ("What was the city of Istanbul once called?", "What was the former name of Istanbul?"),
        ("Why don't oil and water mix?", "Why do oil and water stay separate?"),
        (
            "Is it bad to crack your knuckles once in a while?",
            "Is it bad to occasionally crack your knuckles?",
        ),
        ("Why doesn't the Dead Sea have any fish?", "Why are there no fish in the Dead Sea?"),
    ],
    "rag_documents": [
        (
            "Once a new hire signs the contract, what does the onboarding guide say happens next?",
            "After a new hire signs the contract, what does the onboarding guide say happens next?",
        ),
        (
            "According to the policy, what happens if an employee no longer needs their parking permit?",
            "According to the policy, what happens if an employee doesn't need their parking permit anymore?",
        ),
        (
            "What does the handbook say about taking a couple of days off at short notice?",
            "What does the handbook say about taking a few days off at short notice?",
        ),
        (
            "Does the scanner manual say anything about cleaning the sensor every now and then?",
            "Does the scanner manual say anything about occasional cleaning of the sensor?",
        ),
        (
            "According to the IT policy, what should I do if my badge stops working?",
            "According to the IT policy, what should I do if my badge no longer works?",
        ),
        (
            "To begin with, what does the safety manual say about ladders?",
            "First of all, what does the safety manual say about ladders?",
        ),
        (
            "Per the expense policy, can one claim mileage for a commute?",
            "Per the expense policy, can you claim mileage for a commute?",
        ),
        (
            "What does the travel policy say if a flight is cancelled and there's no alternative the same day?",
            "What does the travel policy say if a flight is cancelled and nothing else is available the same day?",
        ),
        (
            "What does the warranty say about a phone that won't turn on anymore?",
            "What does the warranty say about a phone that no longer powers on?",
        ),
        (
            "According to the handbook, can I work from home every once in a while?",
            "According to the handbook, can I occasionally work from home?",
        ),
        (
            "What does the maintenance manual say to check when the pump fails to start?",
            "What does the maintenance manual say to check when the pump won't start?",
        ),
    ],
}

ARTICLE_DETERMINER: Pairs = {
    "ops_support": [
        ("How do I add a new SSH key to GitHub?", "How do I add another SSH key to GitHub?"),
        ("How do I mount the USB drive on Ubuntu?", "How do I mount my USB drive on Ubuntu?"),
        ("How do I renew an SSL certificate with certbot?", "How do I renew SSL certificates with certbot?"),
        (
            "How do I connect to the database server over SSH?",
            "How do I connect to a database server over SSH?",
        ),
        ("Why is my Wi-Fi slow in the evenings?", "Why is the Wi-Fi slow in the evenings?"),
        (
            "How do I set a static IP address on a Raspberry Pi?",
            "How do I set a static IP address on my Raspberry Pi?",
        ),
        (
            "How do I create a Kubernetes secret from a file?",
            "How do I create Kubernetes secrets from files?",
        ),
        (
            "How do I check when a user's password expires in Active Directory?",
            "How do I check when users' passwords expire in Active Directory?",
        ),
        (
            "How do I add a new disk to an LVM volume group?",
            "How do I add another disk to an LVM volume group?",
        ),
        ("How do I forward a port on the router?", "How do I forward a port on my router?"),
        ("How do I clean the fan of a laptop?", "How do I clean my laptop's fan?"),
    ],
    "programming": [
        (
            "How do I add a new column to a pandas DataFrame?",
            "How do I add another column to a pandas DataFrame?",
        ),
        (
            "How do I sort the list of tuples by the second element?",
            "How do I sort a list of tuples by the second element?",
        ),
        ("How do I write unit tests for my Flask app?", "How do I write unit tests for a Flask app?"),
        ("How do I parse a TOML file in Python?", "How do I parse TOML files in Python?"),
        ("How do I define a new route in Express?", "How do I define another route in Express?"),
        ("How do I call an API from my React component?", "How do I call APIs from React components?"),
        ("How do I make the button disabled in HTML?", "How do I make a button disabled in HTML?"),
        (
            "How do I install the dependencies of a Node project?",
            "How do I install my Node project's dependencies?",
        ),
        ("How do I declare an enum in TypeScript?", "How do I declare enums in TypeScript?"),
        (
            "How do I catch the exception in a Java stream lambda?",
            "How do I catch exceptions in Java stream lambdas?",
        ),
        ("How do I create a new thread in Java?", "How do I create a thread in Java?"),
    ],
    "general_knowledge": [
        ("How long does a tortoise live?", "How long do tortoises live?"),
        ("What does a honeybee eat?", "What do honeybees eat?"),
        ("Why does a bird sing in the morning?", "Why do birds sing in the morning?"),
        ("How do I care for an orchid?", "How do I care for my orchid?"),
        ("How fast can a horse run?", "How fast can horses run?"),
        ("How do you make the perfect boiled egg?", "How do you make a perfect boiled egg?"),
        ("How many legs does a spider have?", "How many legs do spiders have?"),
        ("Why does a cat knead with its paws?", "Why do cats knead with their paws?"),
        ("What should I feed my new puppy?", "What should I feed a new puppy?"),
        ("How does a rainbow form?", "How do rainbows form?"),
        ("Why do the leaves change colour in autumn?", "Why do leaves change colour in autumn?"),
    ],
    "rag_documents": [
        (
            "What does the employee handbook say about remote work?",
            "What does our employee handbook say about remote work?",
        ),
        (
            "According to the dishwasher manual, how do I replace the filter?",
            "According to the dishwasher manual, how do I replace a filter?",
        ),
        (
            "According to the wiki, how do I add a new member to the on-call rotation?",
            "According to the wiki, how do I add another member to the on-call rotation?",
        ),
        (
            "According to the onboarding guide, when does a new hire get their access badge?",
            "According to the onboarding guide, when do new hires get their access badges?",
        ),
        (
            "What does the lease say about the security deposit?",
            "What does my lease say about the security deposit?",
        ),
        (
            "According to the brand guidelines, where should the logo go on a slide?",
            "According to the brand guidelines, where should logos go on slides?",
        ),
        (
            "What does the maintenance manual say about lubricating the bearings?",
            "What does the maintenance manual say about lubricating a bearing?",
        ),
        (
            "According to the expense policy, how do I submit a receipt?",
            "According to the expense policy, how do I submit receipts?",
        ),
        (
            "What does the travel policy say about booking a hotel?",
            "What does the travel policy say about booking hotels?",
        ),
        (
            "According to the style guide, how should I cite a source?",
            "According to the style guide, how should I cite sources?",
        ),
        (
            "What does the SOP say about labelling a sample?",
            "What does the SOP say about labelling the samples?",
        ),
    ],
}

VERBOSE_TERSE: Pairs = {
    "ops_support": [
        (
            "Hi, quick question: how do I restart the Apache web server on CentOS? Thanks!",
            "restart apache on centos",
        ),
        (
            "I'm fairly new to Linux and was wondering what the command is to see how much disk space is left on my machine?",
            "linux command to check free disk space",
        ),
        (
            "how do I see all current connections to a Postgres database",
            "Hello! Sorry to bother you, but could you explain how I can see all of the current connections to a Postgres database?",
        ),
        (
            "kubectl logs of previous container",
            "How can I see the logs of the previous container of a pod that restarted, using kubectl?",
        ),
        (
            "Hey there, my colleague told me to flush the ARP cache on my Linux server but I have no idea how. Can you help?",
            "flush arp cache linux",
        ),
        (
            "Good morning. Could you please tell me how to find out which version of Windows is installed on this computer?",
            "check windows version",
        ),
        (
            "Hi, I'm setting up a home lab and I'd like to know how to generate an SSH key pair on macOS.",
            "generate ssh key pair macos",
        ),
        (
            "docker remove all stopped containers",
            "Hi all, I've got loads of stopped Docker containers lying around; what's the command to remove all of them?",
        ),
        (
            "Apologies if this is a basic one, but how do I check which process is using port 8080 on Linux?",
            "which process uses port 8080 linux",
        ),
        (
            "reset forgotten mac login password",
            "Hello, I have forgotten the login password on my Mac and I'm locked out. How can I reset it?",
        ),
        (
            "Quick question from the support desk: how do we unlock a user's account in Okta after too many failed logins?",
            "unlock okta account after failed logins",
        ),
    ],
    "programming": [
        (
            "Hi everyone, I'm learning Python and I was wondering how I could check whether a list is empty?",
            "python check list empty",
        ),
        (
            "git delete remote branch",
            "Sorry for the newbie question, but how do I delete a branch on the remote in git?",
        ),
        (
            "Hello! I'm writing a small script in JavaScript and need to know how to get a random integer between two values.",
            "js random int between two values",
        ),
        (
            "postgres equivalent of select top 5",
            "Hi, I'm new to Postgres, coming from SQL Server. What's the equivalent of SELECT TOP 5 to get the first 5 rows?",
        ),
        (
            "In my Django project, I would like to know how to create a custom management command. Could you explain?",
            "django custom management command",
        ),
        (
            "python read file line by line",
            "Good afternoon, I have a large text file and I'd like to process it in Python one line at a time. How do I read it line by line?",
        ),
        (
            "Hey, in Rust, how would I go about converting a String into a &str? Thanks a lot.",
            "rust String to &str",
        ),
        (
            "regex to match an email address",
            "I'm validating a sign-up form and was wondering: what regular expression should I use to match an email address?",
        ),
        (
            "Could you kindly explain, in simple terms, what event bubbling is in JavaScript?",
            "event bubbling in javascript explained",
        ),
        (
            "bash loop over files in directory",
            "Hi folks, I'm writing a bash script and need to loop over every file in a directory. How do I do that?",
        ),
        (
            "Hello, I hope you're well. In Java, what's the proper way to compare two strings for equality?",
            "java compare strings for equality",
        ),
    ],
    "general_knowledge": [
        ("Hi! My kid asked me this and I didn't know: why is the ocean salty?", "why is the ocean salty"),
        (
            "how many moons does jupiter have",
            "I was reading about the solar system last night and got curious: how many moons does Jupiter have?",
        ),
        (
            "Could you please tell me who wrote the novel One Hundred Years of Solitude?",
            "who wrote one hundred years of solitude",
        ),
        (
            "capital of mongolia",
            "Sorry if this is a silly question, but what is the capital city of Mongolia?",
        ),
        (
            "Out of curiosity, what is the deepest point in the ocean?",
            "deepest point in the ocean",
        ),
        (
            "Hey, settling a debate with a friend here: is a whale a fish or a mammal?",
            "is a whale a fish or mammal",
        ),
        (
            "when did world war 2 end",
            "Hello, I'm helping my daughter with her history homework. When did the Second World War end?",
        ),
        (
            "Hi there, I'm planning a trip and wondered what currency is used in Switzerland?",
            "switzerland currency",
        ),
        ("How many hearts does an octopus have? Asking for a quiz I'm writing.", "octopus number of hearts"),
        (
            "how do plants get energy",
            "My biology teacher mentioned this briefly and I'd like to understand it better: how do plants get their energy?",
        ),
        (
            "Quick trivia question for you: which element has the chemical symbol Fe?",
            "element with symbol Fe",
        ),
    ],
    "rag_documents": [
        (
            "Hi, I've just joined the company and I'm trying to find out what the employee handbook says about bringing dogs to the office.",
            "employee handbook dogs in the office",
        ),
        (
            "According to the IT asset policy, how long is the laptop warranty?",
            "Hello, I'm sorting out a broken laptop for a colleague; could you tell me how long the laptop warranty is according to the IT asset policy?",
        ),
        (
            "expense policy maximum hotel rate per night",
            "Hi, I'm booking a work trip, could you check what the expense policy says is the maximum hotel rate per night?",
        ),
        (
            "Good morning! Quick question about the maintenance manual: what torque does it specify for the pump housing bolts?",
            "maintenance manual pump housing bolt torque",
        ),
        (
            "onboarding guide where to pick up laptop",
            "Hi there, I'm starting soon. Where does the onboarding guide say I should pick up my laptop?",
        ),
        (
            "Could you please look up what the data retention policy says about how long we keep customer invoices?",
            "data retention policy customer invoices retention period",
        ),
        (
            "safety manual forklift rules",
            "Hello, I'm new to the warehouse team. What does the safety manual say about operating a forklift?",
        ),
        (
            "Apologies for the basic question, but according to the benefits guide, when does health insurance coverage begin for new employees?",
            "benefits guide when does health coverage start for new employees",
        ),
        (
            "What does section 9 of the vendor agreement say about payment terms? I need it for a meeting later today.",
            "vendor agreement section 9 payment terms",
        ),
        (
            "office guide conference room booking rules",
            "Hi all, what are the rules in the office guide for booking conference rooms?",
        ),
        (
            "According to the lab's SOP, how should I dispose of chemical waste? I want to make sure I do this properly.",
            "lab SOP chemical waste disposal",
        ),
    ],
}

TYPO_CASING: Pairs = {
    "ops_support": [
        (
            "how do i reload the nginx config without downtime",
            "How do I reload the nginx config without downtime?",
        ),
        ("How do I chekc the disk usage of a directory?", "How do I check the disk usage of a directory?"),
        (
            "whats the command to list all kubernetes namespaces",
            "What's the command to list all Kubernetes namespaces?",
        ),
        ("How do I change the default gateway on Linux", "how do i change the defualt gateway on linux?"),
        ("Why cant I ping my router?", "Why can't I ping my router?"),
        ("HOW DO I CLEAR THE PRINT QUEUE ON WINDOWS?", "How do I clear the print queue on Windows?"),
        ("how to set up a cron job that runs evry night", "How to set up a cron job that runs every night?"),
        (
            "How do I enable remote desktop on windows server",
            "How do I enable Remote Desktop on Windows Server?",
        ),
        (
            "How do I recieve alerts when a server goes down?",
            "How do I receive alerts when a server goes down?",
        ),
        ("where's the postgresql.conf file located", "Where is the postgresql.conf file located?"),
        ("How do I renew my DHCP lease on a mac", "how do I renew my dhcp lease on a Mac?"),
    ],
    "programming": [
        ("how do i reverse a string in javascript", "How do I reverse a string in JavaScript?"),
        ("How do I declare an array in Java", "how do i declare an arry in java?"),
        (
            "Whats the difference between == and === in JavaScript",
            "What's the difference between == and === in JavaScript?",
        ),
        ("how to convert string to lowercase python", "How to convert a string to lowercase in Python?"),
        (
            "How do I sort a dictonary by its keys in Python?",
            "How do I sort a dictionary by its keys in Python?",
        ),
        ("how do i undo git stash pop", "How do I undo git stash pop?"),
        ("What does the static keyword mean in C++", "what does the static keyword mean in c++?"),
        (
            "How do I avoid a NullPointerException in Kotlin?",
            "how do i avoid a nullpointerexception in kotlin",
        ),
        ("Why doesnt my CSS file load in Flask?", "Why doesn't my CSS file load in Flask?"),
        (
            "how do i install packages from requirements.txt",
            "How do I install packages from requirements.txt?",
        ),
        (
            "How do I use enviroment variables in a Dockerfile?",
            "How do I use environment variables in a Dockerfile?",
        ),
    ],
    "general_knowledge": [
        ("who painted the last supper", "Who painted The Last Supper?"),
        ("What is the capitol of Japan?", "What is the capital of Japan?"),
        ("how many continents are there", "How many continents are there?"),
        ("Whats the tallest animal in the world?", "What's the tallest animal in the world?"),
        ("Who was the first woman to win a nobel prize", "Who was the first woman to win a Nobel Prize?"),
        ("What is the largest organ in the human body", "what's the largest organ in the human body?"),
        ("How long do you boil a soft-boiled egg?", "how long do u boil a soft boiled egg"),
        ("What does DNA stand for?", "what does dna stand for"),
        ("Who wrote the Odyssey?", "who wrote the odysey"),
        (
            "What is the freezing point of water in fahrenheit",
            "What is the freezing point of water in Fahrenheit?",
        ),
        ("WHY DO WE HAVE SEASONS?", "Why do we have seasons?"),
    ],
    "rag_documents": [
        (
            "what does the employee handbook say about jury duty",
            "What does the Employee Handbook say about jury duty?",
        ),
        (
            "According to the travel policy, can I expense Wi-Fi on flights?",
            "according to the travel policy can i expense wifi on flights",
        ),
        (
            "What does the maintenence manual say about the cooling fan?",
            "What does the maintenance manual say about the cooling fan?",
        ),
        (
            "whats the procedure for reporting a data breach in the security policy",
            "What's the procedure for reporting a data breach in the security policy?",
        ),
        (
            "According to the onbaording guide, who do I ask for a parking badge?",
            "According to the onboarding guide, who do I ask for a parking badge?",
        ),
        (
            "What does the SLA say about response times for P1 incidents?",
            "what does the sla say about response times for p1 incidents",
        ),
        (
            "Per the code of conduct, can I accept gifts from vendors?",
            "per the code of conduct can i accept gifts from vendors",
        ),
        (
            "WHAT DOES THE FIRE SAFETY PLAN SAY ABOUT ASSEMBLY POINTS?",
            "What does the fire safety plan say about assembly points?",
        ),
        (
            "How many days notice does the leave policy require for annual leave?",
            "How many days' notice does the leave policy require for annual leave?",
        ),
        (
            "What does the user manual say about reseting the router to factory settings?",
            "What does the user manual say about resetting the router to factory settings?",
        ),
        (
            "Where does the IT handbook say I can find the VPN setup instructions?",
            "where does the it handbook say i can find the vpn setup instructions",
        ),
    ],
}

DATASET: dict[str, Pairs] = {
    "number_unit": NUMBER_UNIT,
    "scalar": SCALAR,
    "role_direction": ROLE_DIRECTION,
    "polarity_verb": POLARITY_VERB,
    "negation": NEGATION,
    "entity_attribute": ENTITY_ATTRIBUTE,
    "version_time": VERSION_TIME,
    "lexical": LEXICAL,
    "syntactic": SYNTACTIC,
    "verb_synonym": VERB_SYNONYM,
    "idiom_adverb": IDIOM_ADVERB,
    "article_determiner": ARTICLE_DETERMINER,
    "verbose_terse": VERBOSE_TERSE,
    "typo_casing": TYPO_CASING,
}


def build() -> list[dict[str, str]]:
    """The rows in id order, each with its split."""
    rows: list[dict[str, str]] = []
    for kind in KINDS:
        for domain in DOMAINS:
            for a, b in DATASET[kind][domain]:
                rows.append(
                    {
                        "id": f"g{len(rows) + 1:04d}",
                        "label": KIND_LABEL[kind],
                        "kind": kind,
                        "domain": domain,
                        "split": "",
                        "a": a,
                        "b": b,
                    }
                )
    rng = random.Random(SEED)
    for k, kind in enumerate(KINDS):
        for d, domain in enumerate(DOMAINS):
            cell = [r for r in rows if r["kind"] == kind and r["domain"] == domain]
            rng.shuffle(cell)
            # NOTE: an odd cell's extra pair goes to test or tune in a checkerboard over kind x
            # domain, so every kind and every domain (not only the whole set) stays near half and half.
            extra_to_test = (k + d) % 2 == 1
            n_test = len(cell) // 2 + (len(cell) % 2 if extra_to_test else 0)
            for index, row in enumerate(cell):
                row["split"] = "test" if index < n_test else "tune"
    return rows


def main() -> None:
    """Writes pairs.jsonl and validates it."""
    rows = build()
    DATA.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    summary = validate()
    print(f"wrote {DATA.relative_to(ROOT)}: {json.dumps(summary, indent=2)}")


if __name__ == "__main__":
    main()
